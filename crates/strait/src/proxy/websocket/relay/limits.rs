//! Message limits (`ws_message_size`, `ws_message_rate`): what each sender may send, and
//! where the message under way stands against it. Pure bookkeeping, no I/O.

use std::sync::Arc;

use crate::policy::{MessageGate, MessageLimit, MessageRule, Sender};
use crate::proxy::websocket::frame::{self, OpCode};

use super::{CLOSE_POLICY_VIOLATION, CLOSE_TOO_BIG};

/// The message limits of a session (`ws_message_size`, `ws_message_rate`), per sender.
#[derive(Debug, Clone, Default)]
pub struct MessageLimits {
    pub from_client: SenderLimits,
    pub from_backend: SenderLimits,
}

#[derive(Debug, Clone, Default)]
pub struct SenderLimits {
    /// The largest message, in bytes (the smallest limit given).
    pub max_size: Option<u64>,
    /// Gates each message must pass, with whether a refused message is dropped (rather
    /// than closing the session).
    pub rates: Vec<(Arc<MessageGate>, bool)>,
}

impl MessageLimits {
    /// The limits a handshake's policies handed it (`None`: none).
    pub fn from_policies<'a>(
        limits: impl IntoIterator<Item = &'a MessageLimit>,
    ) -> Option<Box<Self>> {
        let mut limits = limits.into_iter().peekable();
        limits.peek()?;
        let mut all = Box::new(MessageLimits::default());
        for limit in limits {
            let sender = match limit.from {
                Sender::Client => &mut all.from_client,
                Sender::Backend => &mut all.from_backend,
            };
            match &limit.rule {
                MessageRule::MaxSize(max) => {
                    sender.max_size = Some(sender.max_size.map_or(*max, |m| m.min(*max)));
                }
                MessageRule::Rate { gate, drop } => sender.rates.push((gate.clone(), *drop)),
            }
        }
        Some(all)
    }

    pub(super) fn boxed(limits: &SenderLimits) -> Option<Box<Limits>> {
        (limits.max_size.is_some() || !limits.rates.is_empty()).then(|| {
            Box::new(Limits {
                rules: limits.clone(),
                message_len: 0,
                dropping: false,
            })
        })
    }
}

/// A direction's limits and where the message under way stands against them.
pub(super) struct Limits {
    rules: SenderLimits,
    /// Payload bytes of the data message under way, its current frame included.
    message_len: u64,
    /// The message under way is being left out.
    pub(super) dropping: bool,
}

/// What became of the bytes a direction just parsed, under its message limits.
pub(super) enum Limited {
    Relay,
    /// Left out: they belong to a dropped message.
    Dropped,
    /// The frame broke a limit: the session is being closed.
    Refused,
}

/// What the limits say about a frame whose header just arrived.
pub(super) enum Check {
    Pass,
    /// Leave this frame out (it belongs to a dropped message).
    Drop,
    /// Close the session: this code and reason to the sender.
    Refuse(u16, &'static str),
}

impl Limits {
    pub(super) fn check(&mut self, header: &frame::FrameHeader) -> Check {
        let starts = match header.opcode {
            OpCode::Text | OpCode::Binary => true,
            OpCode::Continuation => false,
            OpCode::Close | OpCode::Ping | OpCode::Pong => return Check::Pass,
        };
        if starts {
            self.message_len = 0;
            self.dropping = false;
        } else if self.dropping {
            return Check::Drop;
        }
        self.message_len = self.message_len.saturating_add(header.payload_len);
        if self
            .rules
            .max_size
            .is_some_and(|max| self.message_len > max)
        {
            return Check::Refuse(CLOSE_TOO_BIG, "message too big");
        }
        if starts {
            for (gate, drop) in &self.rules.rates {
                if !gate.admit() {
                    if *drop {
                        self.dropping = true;
                        return Check::Drop;
                    }
                    return Check::Refuse(CLOSE_POLICY_VIOLATION, "message rate exceeded");
                }
            }
        }
        Check::Pass
    }
}
