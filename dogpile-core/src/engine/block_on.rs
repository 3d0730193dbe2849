//! The bridge from the blocking API to the one async driver: a future run to completion on
//! the calling thread, without a runtime.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future of the blocking path to completion on this thread, without a runtime:
/// the blocking I/O's futures never wait on anything but the thread itself, so they are
/// complete when first polled (the loop is there for robustness only).
#[inline]
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}
