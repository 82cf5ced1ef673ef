//! Drawing a [`Screen`]: a header line with the totals, tables of environments, proxies and
//! the busiest connections, and a status line. Unknown numbers show as "–".

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::Constraint::{self, Fill, Length};
use ratatui::layout::Layout;
use ratatui::style::{Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::model::Screen;

/// What unknown numbers show.
const UNKNOWN: &str = "–";

pub fn draw(frame: &mut Frame, screen: &Screen, admin: &str, uptime: Duration) {
    let listed = u16::try_from(screen.environments.len().clamp(1, 8)).unwrap_or(8);
    let [header, environments, proxies, connections, status] =
        Layout::vertical([Length(1), Length(listed + 3), Fill(1), Fill(1), Length(1)])
            .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(screen, admin, uptime)), header);
    frame.render_widget(environments_table(screen), environments);
    frame.render_widget(proxies_table(screen), proxies);
    frame.render_widget(connections_table(screen), connections);
    frame.render_widget(Paragraph::new(status_line(screen, admin)), status);
}

fn header_line(screen: &Screen, admin: &str, uptime: Duration) -> Line<'static> {
    let totals = &screen.totals;
    let seconds = uptime.as_secs();
    Line::from(vec![
        "strait top ".bold(),
        format!(
            "{admin}  up {}:{:02}:{:02}  req/s {}  5xx/s {}  active WS {}  RSS {}  fds {}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            rate(totals.requests),
            rate(totals.errors),
            count(totals.active),
            totals.resident_bytes.map_or(UNKNOWN.into(), bytes),
            totals
                .open_fds
                .map_or(UNKNOWN.into(), |n| format!("{n:.0}")),
        )
        .into(),
    ])
}

fn status_line(screen: &Screen, admin: &str) -> Line<'static> {
    if !screen.problems.is_empty() {
        let problems = screen.problems.join("; ");
        return Line::from(format!(
            "{problems}; showing the last answers, retrying every second"
        ))
        .red();
    }
    if !screen.refreshed {
        return Line::from(format!("connecting to {admin}…"));
    }
    let mut text = String::from("q, Esc or Ctrl-C: quit");
    if screen.metrics_missing {
        text.push_str("  ·  this gateway has no /metrics: no rates");
    }
    Line::from(text).dim()
}

/// (header, width) of each table's columns.
type Columns = [(&'static str, Constraint)];

#[rustfmt::skip]
const ENVIRONMENTS: &Columns = &[
    ("environment", Fill(2)), ("listen", Fill(2)), ("websocket", Length(9)),
    ("proxies", Length(7)), ("req/s", Length(9)), ("active WS", Length(9)),
];
#[rustfmt::skip]
const PROXIES: &Columns = &[
    ("environment", Fill(2)), ("proxy", Fill(2)), ("path", Fill(3)), ("req/s", Length(9)),
    ("5xx/s", Length(9)), ("active WS", Length(9)), ("msgs/s", Length(9)),
];
#[rustfmt::skip]
const CONNECTIONS: &Columns = &[
    ("id", Length(6)), ("env", Fill(2)), ("proxy", Fill(2)), ("client", Length(22)),
    ("consumer", Fill(2)), ("age", Length(7)), ("msgs/s in", Length(9)), ("out", Length(7)),
    ("bytes/s", Length(10)),
];

fn table<'a, const N: usize>(
    title: String,
    columns: &'static Columns,
    rows: impl Iterator<Item = [String; N]>,
) -> Table<'a> {
    Table::new(rows.map(Row::new), columns.iter().map(|c| c.1))
        .header(Row::new(columns.iter().map(|c| c.0)).style(Style::new().bold()))
        .block(Block::bordered().title(title))
}

fn environments_table(screen: &Screen) -> Table<'_> {
    let rows = screen.environments.iter().map(|e| {
        [
            e.name.clone(),
            e.listen.clone(),
            if e.websocket { "on" } else { "off" }.into(),
            e.proxies.to_string(),
            rate(e.requests),
            count(e.active),
        ]
    });
    table(" environments ".into(), ENVIRONMENTS, rows)
}

fn proxies_table(screen: &Screen) -> Table<'_> {
    let rows = screen.proxies.iter().map(|p| {
        [
            name_or(&p.environment, UNKNOWN),
            name_or(&p.proxy, "(no proxy)"),
            p.path.clone(),
            rate(p.requests),
            rate(p.errors),
            count(p.active),
            rate(p.messages),
        ]
    });
    table(" proxies ".into(), PROXIES, rows)
}

fn connections_table(screen: &Screen) -> Table<'_> {
    let first = screen.connections.iter().any(|c| c.rates.is_none());
    let note = if first {
        " (by totals until the next refresh)"
    } else {
        ""
    };
    let rows = screen.connections.iter().map(|row| {
        let (c, rates) = (&row.connection, row.rates);
        [
            c.id.to_string(),
            c.environment.clone(),
            c.proxy.clone(),
            c.client.clone(),
            c.consumer.clone().unwrap_or_else(|| UNKNOWN.into()),
            row.age_seconds.map_or(UNKNOWN.into(), age),
            rate(rates.map(|r| r.messages_in)),
            rate(rates.map(|r| r.messages_out)),
            rates.map_or(UNKNOWN.into(), |r| bytes(r.bytes)),
        ]
    });
    table(
        format!(" busiest WebSocket connections{note} "),
        CONNECTIONS,
        rows,
    )
}

fn name_or(name: &str, empty: &str) -> String {
    if name.is_empty() { empty } else { name }.to_owned()
}

fn rate(value: Option<f64>) -> String {
    value.map_or(UNKNOWN.into(), |v| format!("{v:.1}"))
}

fn count(value: Option<u64>) -> String {
    value.map_or(UNKNOWN.into(), |n| n.to_string())
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`, …
fn bytes(value: f64) -> String {
    let mut value = value;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return if unit == "B" {
                format!("{value:.0} {unit}")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.1} TiB")
}

/// `42s`, `3m05s`, `2h03m`, `1d02h`.
fn age(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(age(42.9), "42s");
        assert_eq!(age(185.0), "3m05s");
        assert_eq!(age(2.0 * 3600.0 + 180.0), "2h03m");
        assert_eq!(age(86_400.0 + 2.0 * 3600.0), "1d02h");
        assert_eq!(rate(None), UNKNOWN);
        assert_eq!(rate(Some(2.26)), "2.3");
    }
}
