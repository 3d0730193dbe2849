//! Free loopback ports for the servers the tests start.

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago, never one of the well-known cache
/// ports (6379 redis, 11211 memcached) that a developer's own server may be using.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| {
                panic!("cannot bind a loopback port for a test server: {error}")
            });
        // Redis Cluster also uses port + 10000 for its bus: keep both in range.
        if port != 6379 && port != 11211 && port < 55000 {
            return port;
        }
    }
}
