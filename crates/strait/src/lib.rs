//! Strait: an API gateway where one API proxy serves HTTP and WebSocket on the same path.
//!
//! Layout (each module's own comment says what it owns and what it may not touch):
//! - [`config`]: the YAML model, its parsing and validation. Pure; reads files only to load them.
//! - [`routing`]: path normalisation, the route table and target resolution. Pure, no I/O.
//! - [`policy`]: consumers and the policies a request must satisfy (authentication,
//!   authorization...), compiled per route. Decides; no I/O but argon2 verification.
//! - [`proxy`]: listeners, the request phases, HTTP forwarding and the WebSocket relay.
//! - [`upstream`]: connections to backends (HTTP/1 connections, TLS, raw connects for upgrades).
//! - [`control`]: the desired state and applying each change live (declarative file or store).
//! - [`store`]: SQLite persistence of the desired state and its history.
//! - [`admin`]: the admin HTTP API over [`control`].
//! - [`telemetry`]: metrics, access log and trace context the data plane records into.
//! - [`echo`]: the built-in echo backend used by the demo, the tests and the benchmarks.
//! - [`error`]: the JSON error every gateway-made response uses, hyper's own answers included.
//! - [`io`]: a TCP connection, plain or with TLS, as both sides of the proxy use it.
//! - [`worker`]: which data-plane worker thread the current one is.

// The engineering standard, checked by clippy: nothing that may panic on what the gateway
// reads (requests, frames, configuration). Tests may.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod admin;
pub mod config;
pub mod control;
pub mod echo;
pub mod error;
pub mod io;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod worker;

pub use proxy::{Gateway, GatewayHandle, GatewayOptions, StartError};
