//! The data plane (lead is writing this).
pub mod websocket;
