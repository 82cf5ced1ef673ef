//! `ws_message_size`: the largest WebSocket message a side may send, in bytes (the sum of
//! its frames' payloads). The relay checks each frame header as it arrives, before any of
//! the frame is forwarded, so a message over the limit is refused at the header of the frame
//! that crosses it — a 10 GiB message after its first header, never buffered. The sender
//! gets 1009 (message too big), the other side 1001. HTTP requests are not affected.

use std::fmt;
use std::sync::Arc;

use super::{
    Field, Fields, Head, Held, Kind, MessageLimit, MessageRule, Phase, Policy, Reported, Sender,
    Shape, Verdict,
};

pub const KIND: Kind = Kind {
    name: "ws_message_size",
    phase: Phase::Limits,
    doc: "The largest WebSocket message (in bytes) a side may send; a larger one closes the session with 1009 to the sender and 1001 to the other side. HTTP requests are not affected.",
    fields: &[
        Field {
            name: "max",
            shape: Shape::Number,
            doc: "The largest message in bytes (required, 1 or more).",
        },
        Field {
            name: "direction",
            shape: Shape::Text,
            doc: "Whose messages are limited: client_to_backend (the default), backend_to_client or both.",
        },
    ],
    parse,
};

const CLIENT: &[Sender] = &[Sender::Client];
const BACKEND: &[Sender] = &[Sender::Backend];
const BOTH: &[Sender] = &[Sender::Client, Sender::Backend];

/// Reads `direction` (default `client_to_backend`): the senders a message policy limits.
pub(super) fn senders(fields: &mut dyn Fields) -> Result<&'static [Sender], Reported> {
    match fields.text("direction")?.as_deref() {
        None | Some("client_to_backend") => Ok(CLIENT),
        Some("backend_to_client") => Ok(BACKEND),
        Some("both") => Ok(BOTH),
        Some(other) => Err(fields.problem(
            "direction",
            format!(
                "direction is {other:?}; it must be client_to_backend, backend_to_client or both"
            ),
        )),
    }
}

struct WsMessageSize {
    max: u64,
    from: &'static [Sender],
}

impl fmt::Debug for WsMessageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsMessageSize")
            .field("max", &self.max)
            .field("from", &self.from)
            .finish()
    }
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let max = fields.number("max");
    let from = senders(fields);
    let max = match max? {
        None => {
            return Err(fields.problem(
                "max",
                "needs max, the largest message in bytes (for example max: 1048576)".to_owned(),
            ));
        }
        Some(0) => {
            return Err(fields.problem("max", "max is 0; it must be 1 or more".to_owned()));
        }
        Some(n) => n,
    };
    Ok(Arc::new(WsMessageSize { max, from: from? }))
}

impl Policy for WsMessageSize {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        if head.websocket {
            for &from in self.from {
                head.effects.held.push(Held::messages(MessageLimit {
                    from,
                    rule: MessageRule::MaxSize(self.max),
                }));
            }
        }
        Verdict::Pass
    }
}
