//! `ip_filter`: which client addresses may use the proxy — `allow` and/or `deny` lists of
//! IPv4 and IPv6 CIDRs (a bare address is a /32 or /128). `deny` wins over `allow`; with an
//! `allow` list, an address on neither is refused; 403.
//!
//! The client address is the TCP peer, unless the peer is one of `trusted_proxies`: then it
//! is the right-most `X-Forwarded-For` entry that is not itself a trusted proxy (nginx's
//! `real_ip_recursive on`). Every entry right of it was appended by a proxy we trust, so a
//! client can prepend what it likes without being believed. When every entry is trusted,
//! the left-most is the client; an entry that is not an address ends the walk at the last
//! trusted address reached. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as dual-stack
//! listeners report IPv4 peers) are judged as the IPv4 address they carry, in the lists too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};

use super::{Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};
use crate::error::{ErrorKind, GatewayError};

pub const KIND: Kind = Kind {
    name: "ip_filter",
    phase: Phase::Access,
    doc: "Allows or denies client addresses by CIDR (403); `X-Forwarded-For` is believed only from `trusted_proxies`.",
    fields: &[
        Field {
            name: "allow",
            shape: Shape::Texts,
            doc: "Only clients in one of these CIDRs may pass (a bare address is a /32 or /128).",
        },
        Field {
            name: "deny",
            shape: Shape::Texts,
            doc: "Clients in any of these CIDRs are refused, even when also allowed.",
        },
        Field {
            name: "trusted_proxies",
            shape: Shape::Texts,
            doc: "CIDRs of proxies whose `X-Forwarded-For` names the client (default: none, the TCP peer is the client).",
        },
    ],
    parse,
};

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");

/// An address block: the address with its host bits cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cidr {
    V4(u32, u8),
    V6(u128, u8),
}

/// Why a CIDR was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CidrError {
    #[error("{0:?} is not an IPv4 or IPv6 address or CIDR (such as 10.0.0.0/8 or 2001:db8::/32)")]
    Address(String),
    #[error("{value:?} has a prefix length above {max}")]
    Prefix { value: String, max: u8 },
}

impl Cidr {
    pub(super) fn parse(text: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError::Address(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => {
                // Digits only: `u8::from_str` would take a `+`.
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (address, Some(prefix.parse::<u8>().map_err(|_| bad())?))
            }
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(CidrError::Prefix {
                value: text.to_owned(),
                max,
            });
        }
        Ok(match address {
            IpAddr::V4(v4) => Cidr::v4(v4, prefix),
            // `::ffff:a.b.c.d/n` with n ≥ 96 is the IPv4 block a.b.c.d/(n-96).
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Cidr::v4(v4, prefix - 96),
                _ => Cidr::V6(u128::from(v6) & mask128(prefix), prefix),
            },
        })
    }

    fn v4(address: Ipv4Addr, prefix: u8) -> Cidr {
        Cidr::V4(u32::from(address) & mask32(prefix), prefix)
    }

    /// Whether `ip` (already canonical: IPv4-mapped addresses as IPv4) is in the block.
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Cidr::V4(net, prefix), IpAddr::V4(v4)) => u32::from(v4) & mask32(prefix) == net,
            (Cidr::V6(net, prefix), IpAddr::V6(v6)) => u128::from(v6) & mask128(prefix) == net,
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[derive(Debug)]
struct IpFilter {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    trusted: Vec<Cidr>,
}

/// The CIDRs under `key`, every bad one reported; `Ok(None)` when absent.
fn cidrs(fields: &mut dyn Fields, key: &str) -> Result<Option<Vec<Cidr>>, Reported> {
    let Some(written) = fields.texts(key)? else {
        return Ok(None);
    };
    let mut parsed = Vec::with_capacity(written.len());
    let mut failed = None;
    for text in &written {
        match Cidr::parse(text.trim()) {
            Ok(cidr) => parsed.push(cidr),
            Err(error) => failed = Some(fields.problem(key, error.to_string())),
        }
    }
    match failed {
        Some(reported) => Err(reported),
        None => Ok(Some(parsed)),
    }
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let allow = cidrs(fields, "allow");
    let deny = cidrs(fields, "deny");
    let trusted = cidrs(fields, "trusted_proxies");
    let (allow, deny, trusted) = (allow?, deny?, trusted?);
    for (key, list) in [("allow", &allow), ("deny", &deny)] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            return Err(fields.problem(
                key,
                format!("{key} is an empty list; name at least one CIDR or leave {key} out"),
            ));
        }
    }
    if allow.is_none() && deny.is_none() {
        return Err(fields.problem(
            "allow",
            "needs allow (the CIDRs that may pass) and/or deny (the CIDRs refused), such as deny: [203.0.113.0/24]".to_owned(),
        ));
    }
    Ok(Arc::new(IpFilter {
        allow: allow.unwrap_or_default(),
        deny: deny.unwrap_or_default(),
        trusted: trusted.unwrap_or_default(),
    }))
}

impl IpFilter {
    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client's address: the peer, or what trusted proxies say it is.
    fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip().to_canonical();
        if !self.trusted(client) {
            return client;
        }
        // Every `X-Forwarded-For` line in order, as one list; walked right to left.
        let entries: Vec<&str> = headers
            .get_all(&XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let Some(ip) = forwarded_ip(entry) else {
                break;
            };
            client = ip;
            if !self.trusted(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry's address (an address, `a.b.c.d:port` or `[v6]:port`).
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

impl Policy for IpFilter {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        let client = self.client(head.client, head.headers);
        let denied = self.deny.iter().any(|c| c.contains(client));
        let allowed = self.allow.is_empty() || self.allow.iter().any(|c| c.contains(client));
        if allowed && !denied {
            return Verdict::Pass;
        }
        Verdict::Refuse(GatewayError::new(
            ErrorKind::Forbidden,
            format!("client address {client} may not use this API proxy"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Given, directory, policy};
    use super::super::{Chain, PolicyEntry};
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap()
    }

    #[test]
    fn cidrs_match_at_their_boundaries() {
        let net = cidr("10.1.2.0/23");
        assert!(!net.contains(ip("10.1.1.255")));
        assert!(net.contains(ip("10.1.2.0")));
        assert!(net.contains(ip("10.1.3.255")));
        assert!(!net.contains(ip("10.1.4.0")));
        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!v6.contains(ip("2001:db9::")));
        assert!(!v6.contains(ip("32.1.13.184")), "no IPv4 in an IPv6 block");
        assert!(!cidr("0.0.0.0/0").contains(ip("::")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(cidr("::/0").contains(ip("ffff::1")));
        let host = cidr("192.0.2.7");
        assert_eq!(host, Cidr::V4(0xc000_0207, 32), "a bare address is a /32");
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.6")));
        assert_eq!(cidr("::1"), Cidr::V6(1, 128));
        assert_eq!(cidr("10.9.8.7/8"), cidr("10.0.0.0/8"), "host bits cleared");
        assert!(cidr("2001:db8::1/127").contains(ip("2001:db8::")));
    }

    #[test]
    fn v4_mapped_addresses_are_ipv4() {
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("::ffff:10.0.0.1"), cidr("10.0.0.1/32"));
        assert!(matches!(cidr("::ffff:0:0/95"), Cidr::V6(_, 95)));
        let filter = IpFilter {
            allow: vec![],
            deny: vec![cidr("10.0.0.0/8")],
            trusted: vec![],
        };
        let mapped: SocketAddr = "[::ffff:10.1.1.1]:5".parse().unwrap();
        assert_eq!(filter.client(mapped, &HeaderMap::new()), ip("10.1.1.1"));
    }

    #[test]
    fn bad_cidrs_are_problems_naming_the_value() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "example.com",
            "*",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
            let mut given = Given::new(&[("deny", json!(["10.0.0.0/8", bad]))]);
            assert!((KIND.parse)(&mut given).is_err(), "{bad}");
            assert_eq!(given.problems.len(), 1, "{:?}", given.problems);
            assert!(
                given.problems[0].starts_with("deny") && given.problems[0].contains(bad),
                "{:?}",
                given.problems
            );
        }
        let mut given = Given::new(&[
            ("allow", json!(["nope"])),
            ("trusted_proxies", json!(["10.0.0.0/99"])),
        ]);
        assert!((KIND.parse)(&mut given).is_err());
        assert_eq!(given.problems.len(), 2, "every list reported");
        for values in [
            vec![],
            vec![("trusted_proxies", json!(["10.0.0.1"]))],
            vec![("allow", json!([]))],
            vec![("allow", json!(["10.0.0.0/8"])), ("deny", json!([]))],
        ] {
            let mut given = Given::new(&values);
            assert!((KIND.parse)(&mut given).is_err(), "{values:?}");
            assert_eq!(given.problems.len(), 1, "{:?}", given.problems);
        }
    }

    fn forwarded(filter: &IpFilter, peer: &str, xff: &[&str]) -> IpAddr {
        let mut headers = HeaderMap::new();
        for line in xff {
            headers.append(XFF, HeaderValue::from_str(line).unwrap());
        }
        let peer: IpAddr = peer.parse().unwrap();
        filter.client(SocketAddr::new(peer, 1000), &headers)
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_proxies() {
        let filter = IpFilter {
            allow: vec![],
            deny: vec![cidr("0.0.0.0/0")],
            trusted: vec![cidr("10.0.0.0/8"), cidr("fd00::/8")],
        };
        // An untrusted peer's header is ignored.
        assert_eq!(
            forwarded(&filter, "198.51.100.1", &["1.1.1.1"]),
            ip("198.51.100.1")
        );
        // A trusted peer without the header is the client.
        assert_eq!(forwarded(&filter, "10.0.0.1", &[]), ip("10.0.0.1"));
        // The client spoofs an entry to the left; the right-most untrusted one wins.
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["127.0.0.1, 203.0.113.9, 10.0.0.2"]),
            ip("203.0.113.9")
        );
        // Several lines are one list, in order.
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["127.0.0.1", "203.0.113.9 ,10.2.0.1"]),
            ip("203.0.113.9")
        );
        // A spoofed trusted-looking entry left of the real client changes nothing.
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["10.9.9.9, 203.0.113.9"]),
            ip("203.0.113.9")
        );
        // Every entry trusted: the left-most.
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["10.0.0.3, 10.0.0.2"]),
            ip("10.0.0.3")
        );
        // Not an address: the walk stops at the last trusted address reached.
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["203.0.113.9, junk"]),
            ip("10.0.0.1")
        );
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["203.0.113.9, junk, 10.0.0.2"]),
            ip("10.0.0.2")
        );
        // Ports, IPv6 and mapped entries.
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["203.0.113.9:4711"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["[2001:db8::1]:4711, fd00::1"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            forwarded(&filter, "10.0.0.1", &["::ffff:10.0.0.5"]),
            ip("10.0.0.5")
        );
        assert_eq!(
            forwarded(&filter, "::ffff:10.0.0.1", &["2001:db8::7"]),
            ip("2001:db8::7")
        );
    }

    async fn verdict(entry: &PolicyEntry, peer: &str, xff: Option<&str>) -> Result<(), String> {
        let chain = Chain::new([entry], directory());
        let mut headers = HeaderMap::new();
        if let Some(xff) = xff {
            headers.insert(XFF, HeaderValue::from_str(xff).unwrap());
        }
        let mut target = "http://b/".parse().unwrap();
        let client = format!("{peer}:1").parse().unwrap();
        match chain.run(&mut headers, &mut target, client, true).await {
            Ok(_) => Ok(()),
            Err(error) => {
                assert_eq!(error.kind, ErrorKind::Forbidden);
                Err(error.message)
            }
        }
    }

    #[tokio::test]
    async fn deny_wins_and_an_allow_list_refuses_the_rest() {
        let filter = policy(
            "ip_filter",
            &[
                ("allow", json!(["192.0.2.0/24", "2001:db8::/32"])),
                ("deny", json!(["192.0.2.128/25"])),
                ("trusted_proxies", json!(["127.0.0.1"])),
            ],
        );
        assert!(verdict(&filter, "192.0.2.127", None).await.is_ok());
        assert!(verdict(&filter, "[2001:db8::5]", None).await.is_ok());
        let refused = verdict(&filter, "192.0.2.128", None).await.unwrap_err();
        assert_eq!(
            refused,
            "client address 192.0.2.128 may not use this API proxy"
        );
        assert!(verdict(&filter, "198.51.100.1", None).await.is_err());
        assert!(verdict(&filter, "127.0.0.1", None).await.is_err());
        assert!(
            verdict(&filter, "127.0.0.1", Some("192.0.2.1"))
                .await
                .is_ok()
        );
        assert!(
            verdict(&filter, "127.0.0.1", Some("192.0.2.1, 192.0.2.200"))
                .await
                .is_err()
        );
        let deny_only = policy("ip_filter", &[("deny", json!(["10.0.0.0/8"]))]);
        assert!(verdict(&deny_only, "11.0.0.1", None).await.is_ok());
        assert!(
            verdict(&deny_only, "10.255.0.1", Some("11.0.0.1"))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn access_runs_before_authentication() {
        let chain = Chain::new(
            [
                &policy("api_key", &[]),
                &policy("ip_filter", &[("deny", json!(["127.0.0.1"]))]),
            ],
            directory(),
        );
        assert_eq!(chain.order(), ["ip_filter", "api_key"]);
        let (result, _, _) = super::super::tests::run(&chain, &[], "http://b/").await;
        assert_eq!(
            result.unwrap_err().kind,
            ErrorKind::Forbidden,
            "refused before credentials are asked for"
        );
    }
}
