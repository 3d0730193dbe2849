//! Background regeneration: the `async_creation_runner` of a region.

use std::fmt;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

/// A regeneration job: it runs the creator, stores the value and releases the lock it holds.
pub type CreationJob = Box<dyn FnOnce() + Send + 'static>;

/// Runs regeneration jobs away from the caller, who returns the stale value at once.
///
/// Plug in your own: a tokio `spawn_blocking`, a job queue.
///
/// ```
/// use dogpile_core::runner::{AsyncCreationRunner, CreationJob};
///
/// struct SpawnThread;
/// impl AsyncCreationRunner for SpawnThread {
///     fn run(&self, job: CreationJob) {
///         std::thread::spawn(job);
///     }
/// }
/// ```
pub trait AsyncCreationRunner: Send + Sync + 'static {
    /// Runs `job`, now or later, on some other thread. The job releases the dogpile lock
    /// when it ends, even if it panics.
    fn run(&self, job: CreationJob);
}

/// A fixed pool of threads that run regeneration jobs in order.
pub struct ThreadPoolRunner {
    sender: Mutex<Sender<CreationJob>>,
    threads: usize,
}

impl ThreadPoolRunner {
    /// A pool of `threads` worker threads (at least one).
    ///
    /// # Errors
    /// When the operating system refuses to start a thread.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (sender, receiver) = channel::<CreationJob>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = receiver.clone();
            thread::Builder::new()
                .name(format!("dogpile-runner-{i}"))
                .spawn(move || loop {
                    let job = match receiver.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => {
                            // A panicking job has already released its lock while
                            // unwinding; keep the worker alive for the next one.
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err()
                            {
                                tracing::error!("a background regeneration job panicked");
                            }
                        }
                        Err(_) => return,
                    }
                })?;
        }
        Ok(ThreadPoolRunner {
            sender: Mutex::new(sender),
            threads,
        })
    }
}

impl AsyncCreationRunner for ThreadPoolRunner {
    fn run(&self, job: CreationJob) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(returned) = sender.send(job) {
            // Every worker is gone: run the job here rather than lose it.
            (returned.0)();
        }
    }
}

impl fmt::Debug for ThreadPoolRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolRunner")
            .field("threads", &self.threads)
            .finish()
    }
}
