//! Asking several nodes in turn for one answer within one deadline: the Sentinels for
//! their master, a cluster's nodes for its slot map.
//!
//! The node that answered last is asked first (redis-py moves it to the front of its list
//! alike), so a node that went away costs only the lookups that found it gone; each node
//! gets an equal share of the time left when it is asked, so one that is down, hung or
//! stopped (`SIGSTOP`: the kernel still accepts its connections, nothing answers) costs
//! one bounded try and the next one is asked in time. When every node failed, the error
//! names each one with its reason.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use redis::{ErrorKind, RedisError};

/// The node asked first by the next round: the last one that answered.
#[derive(Default)]
pub(crate) struct Preferred(AtomicUsize);

/// One round of asking `nodes` in turn, before `deadline`.
pub(crate) struct Turns<'a, N> {
    nodes: &'a [N],
    preferred: &'a Preferred,
    /// When the last answer is due.
    pub(crate) deadline: Instant,
    /// The node asked first (read once: another round may change the preference).
    start: usize,
    /// Nodes asked so far.
    asked: usize,
    /// `(node, reason)` of each failed try.
    failures: Vec<(String, RedisError)>,
}

/// One node to ask: its index, itself and the deadline of its answer.
pub(crate) struct Turn<'a, N> {
    index: usize,
    pub(crate) node: &'a N,
    pub(crate) by: Instant,
}

impl<'a, N> Turns<'a, N> {
    /// A round over `nodes`, the `preferred` one first, that ends by `deadline`.
    pub(crate) fn new(nodes: &'a [N], preferred: &'a Preferred, deadline: Instant) -> Self {
        Turns {
            nodes,
            preferred,
            deadline,
            start: preferred.0.load(Ordering::Relaxed),
            asked: 0,
            failures: Vec::new(),
        }
    }

    /// The next node to ask and its share of the time left; `None` when every one was
    /// asked or no time is left.
    pub(crate) fn next(&mut self) -> Option<Turn<'a, N>> {
        let remaining = self
            .nodes
            .len()
            .checked_sub(self.asked)
            .filter(|n| *n > 0)?;
        let now = Instant::now();
        let left = self.deadline.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        let index = (self.start + self.asked) % self.nodes.len();
        self.asked += 1;
        let share = left / u32::try_from(remaining).unwrap_or(u32::MAX);
        Some(Turn {
            index,
            node: &self.nodes[index],
            by: now + share,
        })
    }

    /// Records what asking `turn` (called `name` in errors) came to: a success makes it
    /// the node asked first from now on, and is returned.
    pub(crate) fn outcome<T>(
        &mut self,
        turn: &Turn<'_, N>,
        name: impl FnOnce() -> String,
        outcome: Result<T, RedisError>,
    ) -> Option<T> {
        match outcome {
            Ok(value) => {
                self.preferred.0.store(turn.index, Ordering::Relaxed);
                Some(value)
            }
            Err(error) => {
                let name = name();
                tracing::debug!(node = %name, %error, "redis node failed; asking the next one");
                self.failures.push((name, error));
                None
            }
        }
    }

    /// The error of a round where every node failed (or the time ran out), `what` saying
    /// what was asked for: an I/O error (unreachable, for `dead_retry`) when every failure
    /// was one, else `kind`.
    pub(crate) fn failed(self, kind: ErrorKind, what: &'static str) -> RedisError {
        let all_io = self.failures.iter().all(|(_, error)| error.is_io_error());
        let mut detail: Vec<String> = self
            .failures
            .iter()
            .map(|(node, error)| format!("{node}: {error}"))
            .collect();
        let unasked = self.nodes.len() - self.asked;
        if unasked > 0 {
            detail.push(format!("{unasked} not asked: no time left"));
        }
        RedisError::from((
            if all_io { ErrorKind::Io } else { kind },
            what,
            detail.join("; "),
        ))
    }
}
