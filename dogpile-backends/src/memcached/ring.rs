//! Consistent hashing of keys over memcached servers: a ketama ring.
//!
//! Built as libketama builds it: each server `host:port` gets 160 points on a 32-bit
//! circle, four from each MD5 digest of `"{host}:{port}-{i}"` for `i` in `0..40`; a key
//! goes to the first point at or after the first four bytes (little endian) of its MD5.
//! Adding or removing one of `n` servers moves only about `1/n` of the keys, and the
//! placement depends on nothing but the server names, so every process (whatever its
//! build) puts a key on the same server.
//!
//! The `memcache` crate's own multi-server client takes a `DefaultHasher` value modulo
//! the number of servers: adding a server remaps almost every key, and `DefaultHasher`
//! may change between Rust releases, which would split a distributed lock between two
//! processes built differently. Hence this ring. No well-kept crate provides one (the
//! candidates are unmaintained or a single early release), and it is a few lines.

use md5::{Digest, Md5};

/// Points per server (libketama's 160: 40 digests of 4 points each).
const DIGESTS_PER_SERVER: u32 = 40;

/// A ketama ring over server names, giving the index of the server for a key.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    /// (point, server index), sorted by point.
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// A ring over `servers` (names such as `"10.0.0.1:11211"`), indexed in that order.
    pub(crate) fn new<S: AsRef<str>>(servers: &[S]) -> Self {
        let mut points = Vec::with_capacity(servers.len() * DIGESTS_PER_SERVER as usize * 4);
        for (index, server) in servers.iter().enumerate() {
            for i in 0..DIGESTS_PER_SERVER {
                let digest = Md5::digest(format!("{}-{i}", server.as_ref()).as_bytes());
                for chunk in digest.chunks_exact(4) {
                    let point = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    points.push((point, index));
                }
            }
        }
        // Ties (astronomically rare) are broken by server index, so every process agrees.
        points.sort_unstable();
        Ring { points }
    }

    /// The index of the server that holds `key`.
    pub(crate) fn server_for(&self, key: &str) -> usize {
        if self.points.len() <= DIGESTS_PER_SERVER as usize * 4 {
            // One server (or none, which the backend never builds).
            return 0;
        }
        let digest = Md5::digest(key.as_bytes());
        let hash = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let at = self.points.partition_point(|&(point, _)| point < hash);
        self.points.get(at).unwrap_or(&self.points[0]).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:11211", i + 1)).collect()
    }

    fn keys() -> impl Iterator<Item = String> {
        (0..20_000).map(|i| format!("myapp.tools:one|{i}"))
    }

    #[test]
    fn one_server_takes_every_key() {
        let ring = Ring::new(&["127.0.0.1:11211"]);
        assert!(keys().take(100).all(|k| ring.server_for(&k) == 0));
    }

    #[test]
    fn keys_spread_evenly() {
        let ring = Ring::new(&servers(4));
        let mut counts = [0usize; 4];
        for key in keys() {
            counts[ring.server_for(&key)] += 1;
        }
        // 160 points per server give each a share within a few percent of 1/4.
        for (server, count) in counts.iter().enumerate() {
            let share = *count as f64 / 20_000.0;
            assert!(
                (0.18..0.32).contains(&share),
                "server {server} got {share:.3} of the keys: {counts:?}"
            );
        }
    }

    #[test]
    fn adding_a_server_moves_only_its_share_and_only_to_it() {
        let before = Ring::new(&servers(4));
        let after = Ring::new(&servers(5));
        let mut moved = 0;
        for key in keys() {
            let (old, new) = (before.server_for(&key), after.server_for(&key));
            if old != new {
                assert_eq!(new, 4, "key {key} moved between two old servers");
                moved += 1;
            }
        }
        let share = moved as f64 / 20_000.0;
        assert!(
            (0.12..0.28).contains(&share),
            "{share:.3} of the keys moved; about 1/5 should"
        );
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let all = servers(4);
        let before = Ring::new(&all);
        // Server 2 leaves; indexes of the others shift down past it.
        let rest: Vec<_> = all.iter().enumerate().filter(|(i, _)| *i != 2).collect();
        let after = Ring::new(&rest.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>());
        for key in keys() {
            let old = before.server_for(&key);
            if old != 2 {
                let new = rest[after.server_for(&key)].0;
                assert_eq!(new, old, "key {key} left a server that stayed");
            }
        }
    }

    #[test]
    fn placement_depends_only_on_server_names_not_their_order() {
        let names = servers(3);
        let ring = Ring::new(&names);
        let reversed: Vec<_> = names.iter().rev().cloned().collect();
        let ring_reversed = Ring::new(&reversed);
        for key in keys().take(2000) {
            assert_eq!(
                names[ring.server_for(&key)],
                reversed[ring_reversed.server_for(&key)],
                "{key}"
            );
        }
    }

    #[test]
    fn placement_is_pinned() {
        // A change of algorithm would silently move every key of every deployment (and
        // split distributed locks between old and new processes): pin a few placements.
        let names = servers(3);
        let ring = Ring::new(&names);
        let placed: Vec<&str> = ["a", "user:42", "myapp.tools:one|foo|3 4", "_lock0"]
            .iter()
            .map(|key| names[ring.server_for(key)].as_str())
            .collect();
        assert_eq!(placed, PINNED);
    }

    /// Computed independently (Python's hashlib, libketama's construction).
    const PINNED: [&str; 4] = [
        "10.0.0.3:11211",
        "10.0.0.1:11211",
        "10.0.0.1:11211",
        "10.0.0.2:11211",
    ];
}
