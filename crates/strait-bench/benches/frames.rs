//! WebSocket frame-header parsing: what the relay does for every frame that passes, one
//! direction at a time, with the payload only counted (never copied or unmasked).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strait::proxy::websocket::frame::{FrameParser, MaskPolicy};

/// One binary frame with FIN set: `len` payload bytes, masked (as a client sends) or not.
fn frame(len: usize, masked: bool) -> Vec<u8> {
    let mut bytes = vec![0x82];
    let mask_bit = if masked { 0x80 } else { 0 };
    match len {
        0..=125 => bytes.push(mask_bit | len as u8),
        126..=0xFFFF => {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            bytes.push(mask_bit | 127);
            bytes.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if masked {
        bytes.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    }
    bytes.resize(bytes.len() + len, 0x5a);
    bytes
}

/// Feeds `input` to `parser` in pieces of at most `piece` bytes; returns the frames ended.
fn parse(parser: &mut FrameParser, input: &[u8], piece: usize) -> usize {
    let mut ended = 0;
    for chunk in input.chunks(piece) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match parser.advance(rest) {
                Ok((used, end)) => {
                    ended += usize::from(end.is_some());
                    rest = rest.get(used..).unwrap_or_default();
                }
                Err(error) => panic!("a valid frame was refused: {error:?}"),
            }
        }
    }
    ended
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_parse");
    group.throughput(Throughput::Elements(1));
    // (name, payload, masked): the echo benchmark's 64 B both ways, a 16-bit and a 64-bit
    // length, each parsed from one buffer as a read would hand it over.
    let cases = [
        ("to_backend_64B", 64, true),
        ("to_client_64B", 64, false),
        ("to_backend_1KiB", 1024, true),
        ("to_client_1MiB", 1 << 20, false),
    ];
    for (name, len, masked) in cases {
        let bytes = frame(len, masked);
        let policy = if masked {
            MaskPolicy::Required
        } else {
            MaskPolicy::Forbidden
        };
        let mut parser = FrameParser::new(policy);
        group.bench_with_input(BenchmarkId::new("whole", name), &bytes, |b, bytes| {
            b.iter(|| black_box(parse(&mut parser, black_box(bytes), bytes.len())))
        });
    }
    // The worst case for the header state machine: every byte arrives on its own.
    let bytes = frame(64, true);
    let mut parser = FrameParser::new(MaskPolicy::Required);
    group.bench_with_input(
        BenchmarkId::new("byte_by_byte", "to_backend_64B"),
        &bytes,
        |b, bytes| b.iter(|| black_box(parse(&mut parser, black_box(bytes), 1))),
    );
    group.finish();

    // A burst: 100 small frames in one read, as a busy echo session delivers them.
    let mut group = c.benchmark_group("frame_parse_burst");
    group.throughput(Throughput::Elements(100));
    let burst: Vec<u8> = (0..100).flat_map(|_| frame(64, true)).collect();
    let mut parser = FrameParser::new(MaskPolicy::Required);
    group.bench_function("100_x_to_backend_64B", |b| {
        b.iter(|| black_box(parse(&mut parser, black_box(&burst), burst.len())))
    });
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
