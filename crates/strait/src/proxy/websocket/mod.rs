//! WebSocket proxying: the upgrade handshake towards the backend ([`handshake`]), the frame
//! format ([`frame`]) and the full-duplex relay ([`relay`]), which splices large payloads
//! between plain TCP connections ([`splice`]).
pub mod frame;
pub mod handshake;
pub mod relay;
pub mod splice;
