//! `request_size`: the largest HTTP request body, in bytes. A request whose
//! `Content-Length` is over the limit gets 413 at once and never reaches the backend. A body
//! without one (chunked) is counted as it streams to the backend: the frame that crosses the
//! limit is not forwarded, the backend's request is aborted and the client gets 413 — or,
//! when the backend has already answered, its connection is closed. Nothing is buffered.
//! A WebSocket handshake is judged by its `Content-Length` alone (it normally has no body);
//! messages are `ws_message_size`'s. With several limits, the smallest wins.

use std::sync::Arc;

use http::header::CONTENT_LENGTH;

use super::{Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};
use crate::error::{ErrorKind, GatewayError};
use crate::telemetry::TooLarge;

pub const KIND: Kind = Kind {
    name: "request_size",
    phase: Phase::Limits,
    doc: "The largest HTTP request body in bytes: a larger Content-Length gets 413 at once, and a streamed body is cut off with 413 once it passes the limit.",
    fields: &[Field {
        name: "max",
        shape: Shape::Number,
        doc: "The largest request body in bytes (required, 1 or more).",
    }],
    parse,
};

#[derive(Debug)]
struct RequestSize {
    max: u64,
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    match fields.number("max")? {
        None => Err(fields.problem(
            "max",
            "needs max, the largest request body in bytes (for example max: 1048576)".to_owned(),
        )),
        Some(0) => Err(fields.problem("max", "max is 0; it must be 1 or more".to_owned())),
        Some(max) => Ok(Arc::new(RequestSize { max })),
    }
}

/// The 413 for a body over `max` bytes: the same as for a streamed body cut off.
fn too_large(max: u64) -> GatewayError {
    GatewayError::new(
        ErrorKind::PayloadTooLarge,
        TooLarge { limit: max }.to_string(),
    )
}

impl Policy for RequestSize {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        let declared = head
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.max) {
            return Verdict::Refuse(too_large(self.max));
        }
        head.body_limit = Some(head.body_limit.map_or(self.max, |l| l.min(self.max)));
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::super::Chain;
    use super::super::tests::{Given, directory, policy};
    use super::*;
    use http::{HeaderMap, HeaderValue, Uri};
    use serde_json::json;

    async fn admit(chain: &Chain, length: Option<&'static str>) -> Result<Option<u64>, ErrorKind> {
        let mut headers = HeaderMap::new();
        if let Some(length) = length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static(length));
        }
        let mut target: Uri = "http://b/".parse().unwrap();
        chain
            .admit(
                &mut headers,
                &mut target,
                "127.0.0.1:1".parse().unwrap(),
                false,
            )
            .await
            .map(|a| a.body_limit)
            .map_err(|e| e.kind)
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_and_the_smallest_limit_wins() {
        let one = Chain::new(
            [&policy("request_size", &[("max", json!(10))])],
            directory(),
        );
        assert_eq!(admit(&one, None).await, Ok(Some(10)));
        assert_eq!(admit(&one, Some("10")).await, Ok(Some(10)));
        assert_eq!(
            admit(&one, Some("11")).await,
            Err(ErrorKind::PayloadTooLarge)
        );
        let two = Chain::new(
            [
                &policy("request_size", &[("max", json!(10))]),
                &policy("request_size", &[("max", json!(5))]),
            ],
            directory(),
        );
        assert_eq!(admit(&two, None).await, Ok(Some(5)));
        assert_eq!(
            admit(&two, Some("6")).await,
            Err(ErrorKind::PayloadTooLarge)
        );
        assert_eq!(admit(&Chain::default(), None).await, Ok(None));
    }

    #[test]
    fn max_is_required_and_positive() {
        for values in [vec![], vec![("max", json!(0))], vec![("max", json!("big"))]] {
            let mut given = Given::new(&values);
            assert!((KIND.parse)(&mut given).is_err(), "{values:?}");
            assert!(
                given.problems.iter().any(|p| p.starts_with("max")),
                "{:?}",
                given.problems
            );
        }
    }
}
