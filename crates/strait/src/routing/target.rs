//! Steps 4 and 5 of resolution: scheme conversion and joining.

use super::BackendUrl;

/// backend URL + remaining path + `?` + query (byte for byte), with `ws://`/`wss://` for WebSocket.
/// Never produces a double slash at the join (`http://h/` + `/x` → `http://h/x`).
pub fn target_uri(_backend: &BackendUrl, _remaining: &str, _query: Option<&str>, _websocket: bool) -> String {
    todo!()
}
