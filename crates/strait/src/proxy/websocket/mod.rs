//! WebSocket proxying: the upgrade handshake ([`handshake`], its backend half written by
//! hand in [`backend`]), the frame format ([`frame`]) and the full-duplex relay ([`relay`]),
//! which splices large payloads between plain TCP connections ([`splice`]).
pub mod backend;
pub mod frame;
pub mod handshake;
pub mod relay;
pub mod splice;
