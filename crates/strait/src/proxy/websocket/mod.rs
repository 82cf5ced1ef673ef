//! WebSocket proxying: the upgrade handshake towards the backend ([`handshake`]), the frame
//! format ([`frame`]) and the full-duplex relay ([`relay`]).
pub mod frame;
pub mod handshake;
pub mod relay;
