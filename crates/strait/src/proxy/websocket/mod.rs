//! WebSocket proxying: the upgrade handshake towards the backend, and the frame relay.
pub mod frame;
pub mod relay;
