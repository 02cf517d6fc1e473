//! Choosing an endpoint: round robin, least request (power of two choices), random and
//! consistent hash (rendezvous hashing, so adding an endpoint moves few keys). None of them
//! allocate.

use super::config::LbPolicy;
use super::endpoint::Endpoint;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Picks among `endpoints` those for which `usable` holds. `hash` is the consistent-hash key
/// for this request, when the policy has one.
pub fn pick<'e>(
    policy: &LbPolicy,
    endpoints: &'e [Arc<Endpoint>],
    cursor: &AtomicUsize,
    hash: Option<u64>,
    usable: impl Fn(&Endpoint) -> bool,
) -> Option<&'e Arc<Endpoint>> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let scan_from = |start: usize| {
        (0..n)
            .map(|i| &endpoints[(start + i) % n])
            .find(|e| usable(e))
    };
    match policy {
        LbPolicy::RoundRobin | LbPolicy::Passthrough => scan_from(cursor.fetch_add(1, Relaxed)),
        LbPolicy::Random => scan_from(fastrand::usize(0..n)),
        LbPolicy::LeastRequest => {
            let a = scan_from(fastrand::usize(0..n))?;
            let b = scan_from(fastrand::usize(0..n))?;
            Some(if b.active.load(Relaxed) < a.active.load(Relaxed) {
                b
            } else {
                a
            })
        }
        LbPolicy::ConsistentHash(_) => match hash {
            Some(key) => endpoints
                .iter()
                .filter(|e| usable(e))
                .max_by_key(|e| rendezvous(key, &e.authority)),
            None => scan_from(fastrand::usize(0..n)),
        },
    }
}

fn rendezvous(key: u64, authority: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    authority.hash(&mut h);
    h.finish()
}

pub fn hash_key(value: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn eps(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    &format!("127.0.0.{}", i + 1),
                    80,
                    BTreeMap::new(),
                    String::new(),
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_unusable() {
        let e = eps(3);
        let c = AtomicUsize::new(0);
        let picks: Vec<_> = (0..4)
            .map(|_| {
                pick(&LbPolicy::RoundRobin, &e, &c, None, |ep| {
                    ep.authority != "127.0.0.2:80"
                })
                .unwrap()
                .authority
                .clone()
            })
            .collect();
        assert_eq!(
            picks,
            [
                "127.0.0.1:80",
                "127.0.0.3:80",
                "127.0.0.3:80",
                "127.0.0.1:80"
            ]
        );
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let e = eps(2);
        e[0].active.store(10, Relaxed);
        let c = AtomicUsize::new(0);
        let idle = (0..200)
            .filter(|_| {
                pick(&LbPolicy::LeastRequest, &e, &c, None, |_| true)
                    .unwrap()
                    .authority
                    == "127.0.0.2:80"
            })
            .count();
        // Both choices land on the busy endpoint a quarter of the time.
        assert!(idle > 120, "{idle}");
    }

    #[test]
    fn consistent_hash_is_stable() {
        let e = eps(5);
        let c = AtomicUsize::new(0);
        let policy = LbPolicy::ConsistentHash(super::super::config::HashKey::SourceIp);
        let key = hash_key(b"user-1");
        let first = pick(&policy, &e, &c, Some(key), |_| true)
            .unwrap()
            .authority
            .clone();
        for _ in 0..10 {
            assert_eq!(
                pick(&policy, &e, &c, Some(key), |_| true)
                    .unwrap()
                    .authority,
                first
            );
        }
    }

    #[test]
    fn nothing_usable_is_none() {
        let e = eps(2);
        assert!(pick(&LbPolicy::Random, &e, &AtomicUsize::new(0), None, |_| false).is_none());
    }
}
