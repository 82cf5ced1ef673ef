//! The SVG plot referenced from BENCHMARKS.md: latency percentiles (HTTP and the largest
//! WebSocket echo run, log scale) and resident memory per idle connection, one colour per side.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::report::num;
use crate::results::Results;
use crate::stack::Side;

const PERCENTILES: [(&str, &str); 3] = [
    ("p50", "latency p50 (µs)"),
    ("p99", "latency p99 (µs)"),
    ("p99.9", "latency p99.9 (µs)"),
];

fn colour(side: Side) -> RGBColor {
    match side {
        Side::Direct => RGBColor(140, 140, 140),
        Side::Nginx => RGBColor(0, 150, 57),
        Side::Strait => RGBColor(31, 100, 200),
    }
}

pub fn write_svg(path: &Path, results: &Results) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (1260, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let Ok([http_panel, ws_panel, memory]) = <[_; 3]>::try_from(root.split_evenly((1, 3))) else {
        return Err(err(&"the drawing area did not split in three"));
    };
    let http = results
        .rows
        .iter()
        .find(|r| r.section.starts_with("HTTP"))
        .map(|r| r.section.clone());
    // The WebSocket echo section with the most connections is the last one added.
    let ws = results
        .rows
        .iter()
        .rev()
        .find(|r| r.section.starts_with("WebSocket echo"))
        .map(|r| r.section.clone());
    for (area, section, title) in [
        (&http_panel, http, "HTTP latency (µs)"),
        (&ws_panel, ws, "round-trip latency (µs)"),
    ] {
        latency_panel(area, results, section.as_deref(), title).map_err(|e| err(&e))?;
    }
    memory_panel(&memory, results).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn latency_panel(area: &Area, results: &Results, section: Option<&str>, title: &str) -> DrawResult {
    let series: Vec<(Side, Vec<f64>)> = Side::ALL
        .iter()
        .map(|&side| {
            let values = PERCENTILES
                .iter()
                .map(|(_, metric)| {
                    section
                        .and_then(|s| results.find(s, metric))
                        .and_then(|row| row.median(side))
                        .unwrap_or(f64::NAN)
                })
                .collect();
            (side, values)
        })
        .collect();
    let finite = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = finite.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi > 0.0 {
        (lo / 1.5, hi * 1.5)
    } else {
        (1.0, 10.0)
    };
    let caption = section.unwrap_or(title);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 13))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0u32..2u32).into_segmented(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => {
                PERCENTILES.get(*i as usize).map_or("", |p| p.0).to_owned()
            }
            _ => String::new(),
        })
        .y_desc(format!("{title}, log scale"))
        .y_label_formatter(&|v| num(*v))
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (side, values) in series {
        let points: Vec<(SegmentValue<u32>, f64)> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite() && **v > 0.0)
            .map(|(i, &v)| (SegmentValue::CenterOf(i as u32), v))
            .collect();
        let style = colour(side).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style).point_size(4))?
            .label(side.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
}

fn memory_panel(area: &Area, results: &Results) -> DrawResult {
    let row = results.find("Idle", crate::compare::MEMORY_PER_CONN);
    let values: Vec<(u32, f64)> = Side::ALL
        .iter()
        .map(|&side| {
            let v = row
                .and_then(|r| r.median(side))
                .filter(|v| v.is_finite())
                .unwrap_or(0.0);
            (side.index() as u32, v.max(0.0))
        })
        .collect();
    let top = values.iter().map(|(_, v)| *v).fold(1.0f64, f64::max) * 1.2;
    let caption = row.map_or("Idle connections: not measured", |r| r.section.as_str());
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 13))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0u32..2u32).into_segmented(), 0f64..top)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => Side::ALL
                .get(*i as usize)
                .map_or("", |s| s.name())
                .to_owned(),
            _ => String::new(),
        })
        .y_desc(crate::compare::MEMORY_PER_CONN)
        .y_label_formatter(&|v| num(*v))
        .light_line_style(TRANSPARENT)
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .margin(24)
            .style_func(|x, _| {
                let i = match x {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => *i as usize,
                    SegmentValue::Last => 0,
                };
                colour(Side::ALL.get(i).copied().unwrap_or(Side::Direct)).filled()
            })
            .data(values),
    )?;
    Ok(())
}
