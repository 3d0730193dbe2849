//! The connections to one memcached server: a small blocking pool that starts no thread.
//!
//! A caller takes an idle connection, or opens one itself when fewer than `pool_size`
//! are open, or waits (at most `socket_timeout`) for one to come back. Opening on the
//! caller's thread is what makes a refused connection an error at once, with its reason
//! (`Connection refused`), rather than after the checkout's whole timeout; and since
//! nothing runs anywhere else, a server that keeps failing costs no thread, however
//! often its connections are thrown away.
//!
//! (This replaced an r2d2 pool: r2d2 opens connections on its own threads, three per
//! pool, and retries a failed connect there until the checkout times out, so a refused
//! connection cost the whole `socket_timeout`. Dropping a pool full of dead connections
//! meant building a new one, with three new threads, on every failed call against a
//! server that accepts and closes: 1000 calls left 6005 threads, and later ones panicked
//! when no thread could be spawned.)
//!
//! A connection that failed is dropped when it comes back, never reused; and a
//! connection that broke (reset, closed: what a server restart looks like) flushes the
//! whole pool, because the other idle connections to that server are dead too. Flushing
//! starts a new generation: idle connections are dropped, and connections still in use
//! are dropped when they come back. An idle connection unused for [`IDLE_TIMEOUT`] is
//! dropped rather than used, as a firewall may have forgotten it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::connection::{Connection, Failure};

/// An idle connection older than this is closed instead of used (r2d2's default).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The connections to one server (see the [module docs](self)).
pub(crate) struct Pool {
    address: String,
    /// Connections open at most, idle or in use.
    size: u32,
    /// The connect deadline, and the longest wait for a busy connection.
    timeout: Duration,
    max_value_size: usize,
    state: Mutex<State>,
    /// Signalled when a connection comes back or a place frees up.
    returned: Condvar,
}

struct State {
    /// Idle connections and the generation.
    idle: Idle<Connection>,
    /// Connections open: idle, in use, or being opened.
    open: u32,
    /// Callers waiting for a connection: only then is a return signalled (a signal is a
    /// system call, whether anyone waits or not).
    waiting: u32,
}

/// A connection a pool keeps.
pub(crate) trait Reusable {
    /// True once anything failed on it: it must not be used again.
    fn is_broken(&self) -> bool;
}

impl Reusable for Connection {
    fn is_broken(&self) -> bool {
        Connection::is_broken(self)
    }
}

/// The idle connections of a pool (blocking or async), and its generation.
pub(crate) struct Idle<C> {
    /// Idle connections, with when they came back; the most recent last.
    idle: Vec<(C, Instant)>,
    /// Bumped by a flush: connections of an older one are dropped on return.
    generation: u64,
}

impl<C: Reusable> Idle<C> {
    pub(crate) fn new() -> Self {
        Idle {
            idle: Vec::new(),
            generation: 0,
        }
    }

    /// The generation connections taken now belong to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The most recent idle connection, unless it idled for [`IDLE_TIMEOUT`]; `closed`
    /// is called for each one dropped as too old.
    pub(crate) fn take(&mut self, mut closed: impl FnMut(C)) -> Option<C> {
        while let Some((connection, since)) = self.idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT {
                return Some(connection);
            }
            closed(connection);
        }
        None
    }

    /// Starts a new generation if the pool is still at `generation`: the idle connections
    /// to close (`None` when another caller flushed it already).
    pub(crate) fn flush(&mut self, generation: u64) -> Option<Vec<(C, Instant)>> {
        if self.generation != generation {
            return None;
        }
        self.generation += 1;
        Some(std::mem::take(&mut self.idle))
    }

    /// Keeps `connection` for the next caller, or hands it back to be closed (it broke,
    /// or belongs to an older generation).
    pub(crate) fn give_back(&mut self, connection: C, generation: u64) -> Option<C> {
        if connection.is_broken() || generation != self.generation {
            return Some(connection);
        }
        self.idle.push((connection, Instant::now()));
        None
    }
}

/// Why no connection could be had.
pub(crate) enum Checkout {
    /// Opening a connection failed (refused, unreachable, timed out).
    Connect(Failure),
    /// Every connection stayed in use for this long.
    Busy(Duration),
    /// Connecting timed out, with less than half of the call's deadline left for it
    /// after the wait for a place (async calls): that says nothing about the server.
    #[cfg(feature = "tokio")]
    Late(Failure),
}

/// A connection taken from a [`Pool`]; it goes back when dropped.
pub(crate) type Pooled<'a> = Lease<'a, Pool>;

impl Pool {
    /// A pool of at most `size` connections to `address` (`host:port`); none is opened
    /// before the first checkout.
    pub(crate) fn new(
        address: String,
        size: u32,
        timeout: Duration,
        max_value_size: usize,
    ) -> Self {
        Pool {
            address,
            size: size.max(1),
            timeout,
            max_value_size,
            state: Mutex::new(State {
                idle: Idle::new(),
                open: 0,
                waiting: 0,
            }),
            returned: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection, a new one, or (all `size` in use) the first to come back
    /// within the timeout.
    pub(crate) fn checkout(&self) -> Result<Pooled<'_>, Checkout> {
        let mut state = self.state();
        let mut deadline = None;
        loop {
            let mut closed = 0;
            let idle = state.idle.take(|_| closed += 1);
            state.open -= closed;
            if let Some(connection) = idle {
                return Ok(Lease::new(self, connection, state.idle.generation(), ()));
            }
            if state.open < self.size {
                state.open += 1;
                let generation = state.idle.generation();
                drop(state);
                return match Connection::open(&self.address, self.timeout, self.max_value_size) {
                    Ok(connection) => Ok(Lease::new(self, connection, generation, ())),
                    Err(failure) => {
                        let mut state = self.state();
                        state.open -= 1;
                        if state.waiting > 0 {
                            self.returned.notify_one();
                        }
                        Err(Checkout::Connect(failure))
                    }
                };
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.timeout);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Checkout::Busy(self.timeout));
            }
            state.waiting += 1;
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
            state.waiting -= 1;
        }
    }

    /// Drops every idle connection and, when they come back, the ones in use, if the
    /// pool is still at `generation` (another caller may have flushed it already).
    pub(crate) fn flush(&self, generation: u64) {
        let idle = {
            let mut state = self.state();
            let Some(idle) = state.idle.flush(generation) else {
                return;
            };
            state.open -= idle.len() as u32;
            idle
        };
        // Closed outside the lock.
        drop(idle);
        self.returned.notify_all();
    }

    /// The generation connections taken now belong to.
    pub(crate) fn generation(&self) -> u64 {
        self.state().idle.generation()
    }

    fn give_back(&self, connection: Connection, generation: u64) {
        let mut state = self.state();
        let waiting = state.waiting > 0;
        let dropped = state.idle.give_back(connection, generation);
        if dropped.is_some() {
            state.open -= 1;
        }
        drop(state);
        // Closed outside the lock.
        drop(dropped);
        if waiting {
            self.returned.notify_one();
        }
    }
}

impl Lender for Pool {
    type Connection = Connection;

    fn give_back(&self, connection: Connection, generation: u64) {
        Pool::give_back(self, connection, generation);
    }
}

/// A pool that lends connections ([`Lease`]s) and takes them back.
pub(crate) trait Lender {
    /// What it lends.
    type Connection;

    /// Takes back a connection of `generation`: kept idle, or closed.
    fn give_back(&self, connection: Self::Connection, generation: u64);
}

/// A connection taken from a pool (`P`), with what else the taker holds until it is
/// given back (`H`: the async pool's place); it goes back when dropped.
pub(crate) struct Lease<'a, P: Lender, H = ()> {
    pool: &'a P,
    connection: Option<P::Connection>,
    generation: u64,
    /// Released after the connection went back (fields drop after `Drop::drop`).
    _holding: H,
}

impl<'a, P: Lender, H> Lease<'a, P, H> {
    pub(crate) fn new(pool: &'a P, connection: P::Connection, generation: u64, holding: H) -> Self {
        Lease {
            pool,
            connection: Some(connection),
            generation,
            _holding: holding,
        }
    }

    /// The generation of the pool this connection was taken from.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl<P: Lender, H> std::ops::Deref for Lease<'_, P, H> {
    type Target = P::Connection;

    fn deref(&self) -> &P::Connection {
        self.connection.as_ref().expect("present until dropped")
    }
}

impl<P: Lender, H> std::ops::DerefMut for Lease<'_, P, H> {
    fn deref_mut(&mut self) -> &mut P::Connection {
        self.connection.as_mut().expect("present until dropped")
    }
}

impl<P: Lender, H> Drop for Lease<'_, P, H> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection, self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A checkout's failure, as a connection failure.
    fn connect(pool: &Pool) -> Result<(), Failure> {
        match pool.checkout() {
            Ok(_) => Ok(()),
            Err(Checkout::Connect(failure)) => Err(failure),
            Err(_) => panic!("no connection is in use"),
        }
    }

    fn open_and_idle(pool: &Pool) -> (u32, usize) {
        let state = pool.state();
        (state.open, state.idle.idle.len())
    }

    #[test]
    fn a_refused_connection_is_an_error_at_once_and_frees_its_place() {
        // A port that was free a moment ago, now with nothing listening.
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let pool = Pool::new(address, 1, Duration::from_secs(5), 1024);
        for _ in 0..3 {
            let started = Instant::now();
            let error = connect(&pool).unwrap_err();
            assert!(matches!(error, Failure::Connect(_)), "{error}");
            assert!(started.elapsed() < Duration::from_secs(1), "{error}");
        }
        assert_eq!(pool.state().open, 0);
    }

    #[test]
    fn connections_are_reused_flushed_and_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let pool = Pool::new(address, 2, Duration::from_millis(200), 1024);
        let first = pool.checkout().ok().unwrap();
        let second = pool.checkout().ok().unwrap();
        // Both in use: a third caller waits the timeout, then is told so.
        assert!(matches!(pool.checkout(), Err(Checkout::Busy(_))));
        let generation = first.generation();
        drop(first);
        assert_eq!(pool.state().idle.idle.len(), 1);
        let again = pool.checkout().ok().unwrap();
        assert_eq!(pool.state().open, 2, "the idle one was reused");
        // A flush drops idle connections at once and those in use on their return.
        drop(again);
        pool.flush(generation);
        assert_eq!(open_and_idle(&pool), (1, 0));
        pool.flush(generation); // already flushed: nothing happens
        assert_eq!(pool.generation(), generation + 1);
        drop(second);
        assert_eq!(open_and_idle(&pool), (0, 0));
    }

    #[test]
    fn a_waiting_caller_gets_the_connection_given_back() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let pool = Pool::new(address, 1, Duration::from_secs(10), 1024);
        let taken = pool.checkout().ok().unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let started = Instant::now();
                let got = pool.checkout().is_ok();
                (got, started.elapsed())
            });
            while pool.state().waiting == 0 {
                std::thread::yield_now();
            }
            drop(taken);
            let (got, waited) = waiter.join().unwrap();
            assert!(got && waited < Duration::from_secs(5), "{waited:?}");
        });
        assert_eq!(open_and_idle(&pool), (1, 1));
    }
}
