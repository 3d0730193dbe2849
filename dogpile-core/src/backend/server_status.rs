//! What an operator's `ping` shows of one server of a backend.

use std::time::Duration;

/// One server of a backend, as [`CacheBackend::servers`] reached it just now.
///
/// [`CacheBackend::servers`]: crate::backend::CacheBackend::servers
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The server's address (`host:port`).
    pub address: String,
    /// Reached over TLS.
    pub tls: bool,
    /// Its round-trip time and its version (when it tells one), or why it could not be
    /// reached.
    pub reached: std::result::Result<(Duration, Option<String>), String>,
}

impl ServerStatus {
    /// A server reached in `round_trip`, running `version`.
    pub fn up(
        address: impl Into<String>,
        tls: bool,
        round_trip: Duration,
        version: Option<String>,
    ) -> Self {
        ServerStatus {
            address: address.into(),
            tls,
            reached: Ok((round_trip, version)),
        }
    }

    /// A server that could not be reached, and why.
    pub fn down(address: impl Into<String>, tls: bool, error: impl std::fmt::Display) -> Self {
        ServerStatus {
            address: address.into(),
            tls,
            reached: Err(error.to_string()),
        }
    }
}
