//! The async connections to one memcached server: tokio's `TcpStream`s moving the bytes
//! of the sans-I/O [`command`](super::command)s (the same requests, reply checks and
//! limits as the blocking `connection`), and a small pool of them.
//!
//! - **One deadline per call**: `socket_timeout` from the call's start covers waiting for
//!   a pooled connection, connecting, sending the request and reading the whole reply
//!   (one `tokio::time::timeout_at`), so a server that stalls, trickles or never reads
//!   cannot hold a call longer, and neither can a pool whose connections are all held by
//!   such calls. (The blocking side gives the command its own `socket_timeout` after the
//!   wait for a connection; here a task never waits longer than one.)
//! - **Bounded memory**: the parser's limits (a line of 2 KiB, a value of
//!   `max_value_size`), as on the blocking side: the codec is the same.
//! - **No reuse after a failure**: a connection whose command failed, or whose call was
//!   dropped midway (a cancelled future), is closed, never pooled again (the codec counts
//!   it broken from the start of a command until its answer is whole).
//!
//! The pool holds at most `pool_size` connections (a semaphore), opened on first need and
//! kept idle for the next call, with the blocking pool's generations: a connection that
//! broke (a restarted server) flushes the idle ones. A host given by name is resolved by
//! tokio, which asks the system resolver on its blocking pool: once per new connection,
//! never per command (an IP address is not resolved).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{sleep_until, Sleep};

use super::command::{Codec, Command, Exchange, Failure, Outcome};
use super::pool::{Checkout, Idle, Lease, Lender, Reusable};

/// An async connection to one memcached server (see the [module docs](self)).
pub(crate) struct AsyncConnection {
    stream: TcpStream,
    codec: Codec,
    /// The deadline timer, kept from command to command: moved to a later deadline, a
    /// timer still in tokio's wheel is updated in place, without taking the timer
    /// driver's lock (a new timer per command costs about a quarter of a microsecond,
    /// 4 % of a loopback hit, to register and remove).
    timer: Option<Pin<Box<Sleep>>>,
}

impl Reusable for AsyncConnection {
    fn is_broken(&self) -> bool {
        self.codec.is_broken()
    }
}

impl AsyncConnection {
    /// Connects to `address` (`host:port`) before `deadline`.
    async fn open(address: &str, deadline: Instant, max_value_size: usize) -> Outcome<Self> {
        let stream =
            match tokio::time::timeout_at(deadline.into(), TcpStream::connect(address)).await {
                Ok(connected) => connected.map_err(Failure::Connect)?,
                Err(_) => {
                    return Err(Failure::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection timed out (socket_timeout)",
                    )))
                }
            };
        stream.set_nodelay(true).map_err(Failure::Connect)?;
        Ok(AsyncConnection {
            stream,
            codec: Codec::new(max_value_size),
            timer: None,
        })
    }

    /// Sends `command`'s request and reads its replies until its answer is whole, before
    /// `deadline` (of a call that began at `started`). Any failure, or a drop midway,
    /// leaves the connection broken.
    pub(crate) async fn run<C: Command + Sync>(
        &mut self,
        command: &C,
        started: Instant,
        deadline: Instant,
    ) -> Outcome<C::Output>
    where
        C::State: Send,
    {
        let AsyncConnection {
            stream,
            codec,
            timer,
        } = self;
        let mut exchange = codec.begin(command)?;
        let outcome = {
            let io = exchange_on(stream, codec, &mut exchange);
            let mut io = std::pin::pin!(io);
            let mut set = false;
            // The exchange is polled first: the timer is set only once it waits, on a
            // connection whose stream (and so whose runtime) is alive.
            std::future::poll_fn(|cx| {
                if let Poll::Ready(outcome) = io.as_mut().poll(cx) {
                    return Poll::Ready(outcome);
                }
                let timer = timer.get_or_insert_with(|| Box::pin(sleep_until(deadline.into())));
                if !set {
                    timer.as_mut().reset(deadline.into());
                    set = true;
                }
                timer.as_mut().poll(cx).map(|()| {
                    Err(Failure::Timeout {
                        waited: started.elapsed(),
                    })
                })
            })
            .await
        };
        outcome.map(|()| codec.finish(exchange))
    }
}

/// Sends the request of `exchange` on `stream` and reads its replies until the answer is
/// whole.
async fn exchange_on<C: Command>(
    stream: &mut TcpStream,
    codec: &mut Codec,
    exchange: &mut Exchange<'_, C>,
) -> Outcome<()> {
    for piece in codec.pieces(exchange) {
        stream.write_all(piece).await.map_err(Failure::Io)?;
    }
    while !codec.advance(exchange)? {
        let n = stream.read(codec.spare()).await.map_err(Failure::Io)?;
        codec.filled(n)?;
    }
    Ok(())
}

/// The async connections to one server (see the [module docs](self)).
pub(crate) struct AsyncPool {
    address: String,
    timeout: Duration,
    max_value_size: usize,
    /// One per connection that may be open: idle, in use or being opened.
    permits: Semaphore,
    idle: Mutex<Idle<AsyncConnection>>,
}

/// A connection taken from an [`AsyncPool`], with its place; both go back when dropped.
pub(crate) type AsyncPooled<'a> = Lease<'a, AsyncPool, SemaphorePermit<'a>>;

impl AsyncPool {
    /// A pool of at most `size` connections to `address` (`host:port`); none is opened
    /// before the first call, so no runtime is needed to make it.
    pub(crate) fn new(
        address: String,
        size: u32,
        timeout: Duration,
        max_value_size: usize,
    ) -> Self {
        AsyncPool {
            address,
            timeout,
            max_value_size,
            permits: Semaphore::new(usize::try_from(size.max(1)).unwrap_or(usize::MAX)),
            idle: Mutex::new(Idle::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Idle<AsyncConnection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection or a new one, before `deadline`; and whether it took a wait
    /// (for a place, or to connect).
    pub(crate) async fn checkout(
        &self,
        deadline: Instant,
    ) -> Result<(AsyncPooled<'_>, bool), Checkout> {
        // A place free at once needs no timer.
        let (permit, mut waited) = match self.permits.try_acquire() {
            Ok(permit) => (permit, false),
            Err(_) => {
                match tokio::time::timeout_at(deadline.into(), self.permits.acquire()).await {
                    Ok(Ok(permit)) => (permit, true),
                    _ => return Err(Checkout::Busy(self.timeout)),
                }
            }
        };
        let (idle, generation) = {
            let mut idle = self.idle();
            (idle.take(drop), idle.generation())
        };
        let connection = match idle {
            Some(connection) => connection,
            None => {
                waited = true;
                let late = deadline.saturating_duration_since(Instant::now()) < self.timeout / 2;
                AsyncConnection::open(&self.address, deadline, self.max_value_size)
                    .await
                    .map_err(|failure| match failure {
                        Failure::Connect(error)
                            if late && error.kind() == std::io::ErrorKind::TimedOut =>
                        {
                            Checkout::Late(Failure::Connect(error))
                        }
                        failure => Checkout::Connect(failure),
                    })?
            }
        };
        Ok((Lease::new(self, connection, generation, permit), waited))
    }

    /// Drops every idle connection and, when they come back, the ones in use, if the
    /// pool is still at `generation`.
    pub(crate) fn flush(&self, generation: u64) {
        let idle = self.idle().flush(generation);
        // Closed outside the lock.
        drop(idle);
    }

    /// The generation connections taken now belong to.
    pub(crate) fn generation(&self) -> u64 {
        self.idle().generation()
    }
}

impl Lender for AsyncPool {
    type Connection = AsyncConnection;

    fn give_back(&self, connection: AsyncConnection, generation: u64) {
        let dropped = self.idle().give_back(connection, generation);
        // Closed outside the lock.
        drop(dropped);
    }
}
