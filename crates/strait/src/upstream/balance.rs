//! Target selection: weighted round robin, least connections and consistent hashing, plus the
//! hash key a request contributes.
//!
//! Owns [`Balancer`] (built once per pool at compile time, lock-free afterwards) and
//! [`hash_key`]. It picks an index among the targets the caller calls eligible; it may not
//! change health, breaker or lease state (that is [`super::pool`]'s job) and does no I/O.
//!
//! - Round robin: nginx's smooth weighted algorithm run once at compile time over a whole
//!   cycle (sum of weights divided by their gcd) into a schedule; each request takes the next
//!   entry with one atomic `fetch_add`. No lock. When the scheduled target is not eligible,
//!   the same counter picks among the eligible ones in proportion to their weights.
//! - Least connections: fewest `active / weight` (compared by cross-multiplying), scanning
//!   from a rotating start so equal targets share.
//! - Consistent hash: a ketama-like ring with about 160 points per target (scaled by weight
//!   relative to the mean); FNV-1a + a 64-bit finaliser, stable across processes. A down or
//!   excluded target passes its keys to the next target on the ring. No key: round robin.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderMap;
use http::header::COOKIE;

use super::pool::TargetState;
use super::settings::{Balance, HashOn};

/// Ring points per target of average weight.
const POINTS_PER_TARGET: u64 = 160;

/// Chooses among a pool's targets; built with the pool, shared by all its requests.
#[derive(Debug)]
pub struct Balancer {
    kind: Kind,
    round_robin: RoundRobin,
    rotate: AtomicUsize,
}

#[derive(Debug)]
enum Kind {
    RoundRobin,
    LeastConnections { weights: Vec<u32> },
    ConsistentHash { ring: Vec<(u64, usize)> },
}

impl Balancer {
    /// `weights` and `urls` are per target, in pool order.
    pub fn new(balance: Balance, weights: &[u32], urls: &[&str]) -> Self {
        let kind = match balance {
            Balance::RoundRobin => Kind::RoundRobin,
            Balance::LeastConnections => Kind::LeastConnections {
                weights: weights.to_vec(),
            },
            Balance::ConsistentHash => Kind::ConsistentHash {
                ring: ring(weights, urls),
            },
        };
        Balancer {
            kind,
            round_robin: RoundRobin::new(weights),
            rotate: AtomicUsize::new(0),
        }
    }

    /// An eligible target's index, or `None` when there is none.
    pub fn pick(
        &self,
        targets: &[Arc<TargetState>],
        key: Option<&[u8]>,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match &self.kind {
            Kind::RoundRobin => self.round_robin.pick(&eligible),
            Kind::LeastConnections { weights } => self.least(targets, weights, &eligible),
            Kind::ConsistentHash { ring } => match key {
                Some(key) => on_ring(ring, targets.len(), hash64(key), &eligible),
                None => self.round_robin.pick(&eligible),
            },
        }
    }

    fn least(
        &self,
        targets: &[Arc<TargetState>],
        weights: &[u32],
        eligible: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = targets.len();
        if n == 0 {
            return None;
        }
        let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u128, u128)> = None;
        for i in (start..n).chain(0..start) {
            if !eligible(i) {
                continue;
            }
            let Some(target) = targets.get(i) else {
                continue;
            };
            let active = target.active() as u128;
            let weight = u128::from(weights.get(i).copied().unwrap_or(1).max(1));
            let better = best.is_none_or(|(_, a, w)| active * w < a * weight);
            if better {
                best = Some((i, active, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

/// The smooth weighted round-robin schedule of one cycle and its cursor.
#[derive(Debug)]
struct RoundRobin {
    schedule: Vec<usize>,
    weights: Vec<u64>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    fn new(weights: &[u32]) -> Self {
        let weights: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let scaled: Vec<i64> = weights
            .iter()
            .map(|&w| i64::try_from(w / divisor).unwrap_or(1))
            .collect();
        let total: i64 = scaled.iter().sum();
        // nginx: add each weight to its current value, take the largest, subtract the total.
        let mut current = vec![0i64; scaled.len()];
        let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            let mut chosen: Option<usize> = None;
            let mut best = i64::MIN;
            for (i, (c, w)) in current.iter_mut().zip(&scaled).enumerate() {
                *c += w;
                if *c > best {
                    best = *c;
                    chosen = Some(i);
                }
            }
            if let Some(i) = chosen {
                if let Some(c) = current.get_mut(i) {
                    *c -= total;
                }
                schedule.push(i);
            }
        }
        RoundRobin {
            schedule,
            weights,
            cursor: AtomicUsize::new(0),
        }
    }

    fn pick(&self, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        // One target, the usual case: no turn to take (an atomic add saved per request).
        let tick = match len {
            0 => return None,
            1 => 0,
            _ => self.cursor.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(&i) = self.schedule.get(tick % len)
            && eligible(i)
        {
            return Some(i);
        }
        // Degraded: weighted among the eligible targets, driven by the same counter.
        let total: u64 = (0..self.weights.len())
            .filter(|&i| eligible(i))
            .filter_map(|i| self.weights.get(i))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = (tick as u64) % total;
        for (i, &w) in self.weights.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Ring points sorted by hash; each target gets `160 × n × weight / total weight` (≥ 1).
fn ring(weights: &[u32], urls: &[&str]) -> Vec<(u64, usize)> {
    let n = weights.len().min(urls.len()) as u64;
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let mut points = Vec::new();
    for (i, (&w, url)) in weights.iter().zip(urls).enumerate() {
        let share = (POINTS_PER_TARGET * n * u64::from(w.max(1)) / total.max(1)).max(1);
        for p in 0..share {
            let mut h = Fnv::default();
            h.write(url.as_bytes());
            h.write(b"#");
            h.write(&p.to_le_bytes());
            points.push((h.finish(), i));
        }
    }
    points.sort_unstable();
    points
}

/// The first eligible target clockwise from `hash`.
fn on_ring(
    ring: &[(u64, usize)],
    targets: usize,
    hash: u64,
    eligible: &impl Fn(usize) -> bool,
) -> Option<usize> {
    // Walking the ring is bounded: give up at once when nothing is eligible.
    if !(0..targets).any(eligible) {
        return None;
    }
    let start = ring.partition_point(|&(point, _)| point < hash);
    ring.iter()
        .skip(start)
        .chain(ring.iter().take(start))
        .map(|&(_, i)| i)
        .find(|&i| eligible(i))
}

/// FNV-1a, 64-bit.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// With murmur3's finaliser, so nearby inputs spread over the whole ring.
    fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

fn hash64(key: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(key);
    h.finish()
}

/// The bytes a request hashes on; borrowed from the request except a client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey<'a> {
    Borrowed(&'a [u8]),
    Ip { octets: [u8; 16], len: usize },
}

impl HashKey<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            HashKey::Borrowed(b) => b,
            HashKey::Ip { octets, len } => octets.get(..*len).unwrap_or(octets),
        }
    }
}

/// The request's key for `consistent_hash`: the first value of the header, the cookie, the
/// raw (not percent-decoded) query parameter, or the client IP (IPv4-mapped addresses as
/// IPv4). `None` when absent or empty: the pool then falls back to round robin.
pub fn hash_key<'a>(
    hash_on: &HashOn,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    client_ip: IpAddr,
) -> Option<HashKey<'a>> {
    let found: &'a [u8] = match hash_on {
        HashOn::Header(name) => headers.get(name.as_str())?.as_bytes(),
        HashOn::Cookie(name) => headers
            .get_all(COOKIE)
            .iter()
            .find_map(|value| cookie(value.as_bytes(), name.as_bytes()))?,
        HashOn::Query(name) => query?
            .split('&')
            .find_map(|pair| match pair.split_once('=') {
                Some((n, v)) if n == name => Some(v.as_bytes()),
                _ => None,
            })?,
        HashOn::ClientIp => {
            let mut octets = [0u8; 16];
            let len = match client_ip.to_canonical() {
                IpAddr::V4(v4) => {
                    octets[..4].copy_from_slice(&v4.octets());
                    4
                }
                IpAddr::V6(v6) => {
                    octets = v6.octets();
                    16
                }
            };
            return Some(HashKey::Ip { octets, len });
        }
    };
    (!found.is_empty()).then_some(HashKey::Borrowed(found))
}

/// The value of cookie `name` in one `Cookie` header value.
fn cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (n, v) = pair.split_at(eq);
        (n.trim_ascii() == name).then(|| v.get(1..).unwrap_or_default().trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::upstream::breaker::Pass;
    use crate::upstream::pool::tests::{active_check, force_down, spec};
    use crate::upstream::pool::{NoTarget, Pool, PoolCache};
    use crate::upstream::settings::BreakerSpec;

    fn pool(targets: &[(&str, u32)], balance: Balance) -> Arc<Pool> {
        let mut s = spec(targets, balance);
        s.health.active = Some(active_check());
        PoolCache::default().pool("p", &s)
    }

    fn pick_indices(pool: &Pool, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| pool.select(None, &[]).unwrap().index())
            .collect()
    }

    #[test]
    fn weighted_round_robin_is_exact_and_smooth() {
        let p = pool(
            &[("http://a", 2), ("http://b", 1), ("http://c", 1)],
            Balance::RoundRobin,
        );
        let picks = pick_indices(&p, 400);
        // Every window of one cycle (4) holds exactly 2:1:1.
        for window in picks.windows(4) {
            let count = |t| window.iter().filter(|&&i| i == t).count();
            assert_eq!((count(0), count(1), count(2)), (2, 1, 1), "{window:?}");
        }
        // Equal weights alternate (no AAABBB).
        let p = pool(&[("http://a", 3), ("http://b", 3)], Balance::RoundRobin);
        let picks = pick_indices(&p, 12);
        assert!(picks.windows(2).all(|w| w.first() != w.get(1)), "{picks:?}");
        // nginx's own example: 5,1,1 → a a b a c a a.
        let rr = RoundRobin::new(&[5, 1, 1]);
        assert_eq!(rr.schedule, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_skips_down_targets_and_keeps_weights() {
        let p = pool(
            &[("http://a", 2), ("http://b", 1), ("http://c", 1)],
            Balance::RoundRobin,
        );
        force_down(p.targets().get(1).unwrap());
        let picks = pick_indices(&p, 300);
        assert!(!picks.contains(&1));
        let a = picks.iter().filter(|&&i| i == 0).count();
        let c = picks.iter().filter(|&&i| i == 2).count();
        // 2:1 between a and c, within a few picks.
        assert!((190..=210).contains(&a), "a={a} c={c}");
    }

    #[test]
    fn exclude_set_is_honoured() {
        for balance in [
            Balance::RoundRobin,
            Balance::LeastConnections,
            Balance::ConsistentHash,
        ] {
            let p = pool(
                &[("http://a", 1), ("http://b", 5), ("http://c", 1)],
                balance,
            );
            for i in 0..50u32 {
                let key = i.to_le_bytes();
                let lease = p.select(Some(&key), &[1, 2]).unwrap();
                assert_eq!(lease.index(), 0, "{balance:?}");
            }
            assert_eq!(p.select(None, &[0, 1, 2]).unwrap_err(), NoTarget::AllTried);
        }
    }

    #[test]
    fn least_connections_fills_the_new_target_until_level() {
        let mut cache = PoolCache::default();
        let v1 = spec(
            &[("http://a", 1), ("http://b", 1)],
            Balance::LeastConnections,
        );
        let p1 = cache.pool("p", &v1);
        cache.commit();
        let mut held: Vec<_> = (0..10).map(|_| p1.select(None, &[]).unwrap()).collect();
        assert_eq!(p1.targets().first().unwrap().active(), 5);
        assert_eq!(p1.targets().get(1).unwrap().active(), 5);

        // Reload adds `c`: the next five all go to it, then they share again.
        let v2 = spec(
            &[("http://a", 1), ("http://b", 1), ("http://c", 1)],
            Balance::LeastConnections,
        );
        let p2 = cache.pool("p", &v2);
        cache.commit();
        for _ in 0..5 {
            let lease = p2.select(None, &[]).unwrap();
            assert_eq!(lease.url().as_str(), "http://c");
            held.push(lease);
        }
        let next: HashSet<usize> = (0..3)
            .map(|_| {
                let lease = p2.select(None, &[]).unwrap();
                let i = lease.index();
                held.push(lease);
                i
            })
            .collect();
        assert_eq!(next.len(), 3, "equal targets share: {next:?}");
    }

    #[test]
    fn least_connections_respects_weight() {
        let p = pool(
            &[("http://a", 3), ("http://b", 1)],
            Balance::LeastConnections,
        );
        let held: Vec<_> = (0..40).map(|_| p.select(None, &[]).unwrap()).collect();
        assert_eq!(p.targets().first().unwrap().active(), 30);
        assert_eq!(p.targets().get(1).unwrap().active(), 10);
        drop(held);
    }

    #[test]
    fn consistent_hash_is_stable_and_moves_about_a_quarter() {
        let three = [("http://a:1", 1), ("http://b:1", 1), ("http://c:1", 1)];
        let four = [
            ("http://a:1", 1),
            ("http://b:1", 1),
            ("http://c:1", 1),
            ("http://d:1", 1),
        ];
        let p3 = pool(&three, Balance::ConsistentHash);
        let p4 = pool(&four, Balance::ConsistentHash);
        let key = |i: u32| format!("user-{i}");
        let mut moved = 0;
        let mut per_target: HashMap<usize, usize> = HashMap::new();
        for i in 0..10_000 {
            let k = key(i);
            let a = p3.select(Some(k.as_bytes()), &[]).unwrap().index();
            // Same key, same target.
            assert_eq!(a, p3.select(Some(k.as_bytes()), &[]).unwrap().index());
            let b = p4.select(Some(k.as_bytes()), &[]).unwrap().index();
            *per_target.entry(b).or_default() += 1;
            if a != b {
                // Keys only move to the new target.
                assert_eq!(b, 3);
                moved += 1;
            }
        }
        assert!((1500..=3500).contains(&moved), "moved {moved}");
        assert!(per_target.values().all(|&n| n > 1500), "{per_target:?}");
    }

    #[test]
    fn consistent_hash_skips_a_down_target_to_the_next_on_the_ring() {
        let p = pool(
            &[("http://a", 1), ("http://b", 1), ("http://c", 1)],
            Balance::ConsistentHash,
        );
        let before: Vec<usize> = (0..300u32)
            .map(|i| p.select(Some(&i.to_le_bytes()), &[]).unwrap().index())
            .collect();
        force_down(p.targets().first().unwrap());
        for (i, &was) in (0..300u32).zip(&before) {
            let now = p.select(Some(&i.to_le_bytes()), &[]).unwrap().index();
            assert_ne!(now, 0);
            if was != 0 {
                assert_eq!(now, was, "keys on live targets stay");
            }
        }
        // No key: round robin over the live ones.
        let picks = pick_indices(&p, 10);
        assert!(picks.contains(&1) && picks.contains(&2) && !picks.contains(&0));
    }

    #[test]
    fn hash_keys() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.append(COOKIE, "a=1; sid = s1 ;b=2".parse().unwrap());
        h.append(COOKIE, "other=x".parse().unwrap());
        let ip: IpAddr = Ipv4Addr::new(10, 0, 0, 7).into();
        let key =
            |on: HashOn, q: Option<&str>| hash_key(&on, &h, q, ip).map(|k| k.as_bytes().to_vec());
        assert_eq!(
            key(HashOn::Header("x-user".into()), None).unwrap(),
            b"alice"
        );
        assert_eq!(key(HashOn::Header("x-none".into()), None), None);
        assert_eq!(key(HashOn::Header("bad name".into()), None), None);
        assert_eq!(key(HashOn::Cookie("sid".into()), None).unwrap(), b"s1");
        assert_eq!(key(HashOn::Cookie("other".into()), None).unwrap(), b"x");
        assert_eq!(key(HashOn::Cookie("nope".into()), None), None);
        let q = Some("a=1&room=42&room=43&flag");
        assert_eq!(key(HashOn::Query("room".into()), q).unwrap(), b"42");
        assert_eq!(key(HashOn::Query("flag".into()), q), None);
        assert_eq!(key(HashOn::Query("a".into()), Some("a=")), None);
        assert_eq!(key(HashOn::Query("a".into()), None), None);
        assert_eq!(key(HashOn::ClientIp, None).unwrap(), vec![10, 0, 0, 7]);
        let mapped: IpAddr = Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped().into();
        assert_eq!(
            hash_key(&HashOn::ClientIp, &h, None, mapped)
                .unwrap()
                .as_bytes(),
            &[10, 0, 0, 7]
        );
        let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
        assert_eq!(
            hash_key(&HashOn::ClientIp, &h, None, v6)
                .unwrap()
                .as_bytes()
                .len(),
            16
        );
    }

    #[derive(Debug, Clone)]
    struct Case {
        targets: Vec<(u32, bool, bool)>, // weight, down, breaker open
        balance: u8,
        exclude: Vec<usize>,
        key: Option<Vec<u8>>,
        picks: usize,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            prop::collection::vec((1u32..=1000, any::<bool>(), any::<bool>()), 1..8),
            0u8..3,
            prop::collection::vec(0usize..10, 0..4),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            1usize..20,
        )
            .prop_map(|(targets, balance, exclude, key, picks)| Case {
                targets,
                balance,
                exclude,
                key,
                picks,
            })
    }

    proptest! {
        #[test]
        fn selection_never_returns_a_down_or_excluded_target(c in case()) {
            let urls: Vec<String> = (0..c.targets.len()).map(|i| format!("http://t{i}")).collect();
            let list: Vec<(&str, u32)> = urls
                .iter()
                .zip(&c.targets)
                .map(|(u, &(w, _, _))| (u.as_str(), w))
                .collect();
            let balance = match c.balance {
                0 => Balance::RoundRobin,
                1 => Balance::LeastConnections,
                _ => Balance::ConsistentHash,
            };
            let mut s = spec(&list, balance);
            s.health.active = Some(active_check());
            let breaker = BreakerSpec {
                failure_ratio: 0.5,
                min_requests: 1,
                open_for: std::time::Duration::from_secs(3600),
            };
            s.circuit_breaker = Some(breaker.clone());
            let p = PoolCache::default().pool("p", &s);
            for (t, &(_, down, open)) in p.targets().iter().zip(&c.targets) {
                if down {
                    force_down(t);
                }
                if open {
                    // min_requests 1: one failure opens it for an hour.
                    let now = t.ticks(tokio::time::Instant::now());
                    t.breaker().record(&breaker, Pass::Normal, true, now);
                }
            }
            let mut held = Vec::new();
            for _ in 0..c.picks {
                match p.select(c.key.as_deref(), &c.exclude) {
                    Ok(lease) => {
                        let i = lease.index();
                        prop_assert!(!c.exclude.contains(&i));
                        let &(_, down, open) = c.targets.get(i).unwrap();
                        prop_assert!(!down && !open, "picked {i} of {:?}", c.targets);
                        held.push(lease);
                    }
                    Err(NoTarget::AllDown) => {
                        prop_assert!(c.targets.iter().all(|&(_, d, o)| d || o));
                    }
                    Err(NoTarget::AllTried) => {
                        prop_assert!(c.targets.iter().enumerate().all(|(i, &(_, d, o))| d || o || c.exclude.contains(&i)));
                    }
                }
            }
        }
    }
}
