//! Strait's benchmarks. The criterion micro-benchmarks live in `benches/` (`cargo bench -p
//! strait-bench`); this library is the load harness behind the `strait-bench` binary:
//! - [`wsclient`]: a lean WebSocket client (handshake, pre-masked frames, reused read buffer);
//! - [`ws_load`]: the load-generator modes `idle`, `echo`, `connect` and `stream`;
//! - [`latency`]: HDR-histogram recording shared by many tasks;
//! - [`wrk`], [`h2load`] and [`oha`]: parsing their output for the HTTP/1.1 and HTTP/2 load
//!   and HTTP at a fixed rate;
//! - [`procs`]: child-process guards, /proc memory, the descriptor limit;
//! - [`registry`]: timing the admin API's connection list and metrics while sessions are held;
//! - [`stack`]: the echo backend, nginx and Strait as processes under test;
//! - [`cpus`]: which CPUs the gateway, the echo and the load generators run on;
//! - [`compare`]: the alternating direct → nginx → Strait rounds;
//! - [`results`] and [`machine`]: the figures and where they were measured;
//! - [`targets`]: the performance targets, met or not, in this run;
//! - [`report`] and [`plot`]: BENCHMARKS.md and the SVG plot.

// As in the gateway: nothing that may panic on what the harness reads (the network, the
// tools' output). Tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod compare;
pub mod cpus;
pub mod h2load;
pub mod latency;
pub mod machine;
pub mod oha;
pub mod plot;
pub mod procs;
pub mod registry;
pub mod report;
pub mod results;
pub mod stack;
pub mod targets;
pub mod wrk;
pub mod ws_load;
pub mod wsclient;
