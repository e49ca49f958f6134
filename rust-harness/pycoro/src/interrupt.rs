//! Exceptions thrown into a native coroutine while its Rust future waits
//! on a Rust waker: cancellation (`asyncio.CancelledError` from
//! `Task.cancel()`, `trio.Cancelled` from a cancel scope), `throw()` and
//! `close()` (`GeneratorExit`).
//!
//! An `async def` sees such an exception raised at the `await` it is
//! suspended in, and may catch it.  A Rust future cannot be handed an
//! exception in general, so a wait point says that it can take one by
//! wrapping its future in [`interruptible`]: its output becomes
//! `PyResult<T>`, and an exception thrown in while the coroutine is
//! suspended there is returned as `Err` at the next poll (the inner future
//! is not polled again).  The body may handle it, or pass it on with `?`:
//! it then propagates unchanged (the same object, as through an `await`).
//! A thrown `StopIteration` arrives as the `RuntimeError` PEP 479 makes of
//! it in the awaited frame of an `async def` ("coroutine raised
//! StopIteration", the `StopIteration` as its cause).
//!
//! A wait point that is not wrapped cannot see the exception: it propagates
//! out of the coroutine at once and the future is dropped (its `Drop` runs),
//! as PyO3's coroutines do.  The same happens if no wrapped wait point of
//! the body takes it during the poll it is delivered to.  Only one wait
//! point can take it: the first [`interruptible`] that returned `Pending`
//! during the previous poll (e.g. in a `join` of two, the first one polled).
//!
//! [`crate::py_await`] needs no wrapper: it already resolves to the
//! exception raised by (or thrown into) the awaitable.
//!
//! ```
//! use pyo3::prelude::*;
//! use pyo3::exceptions::PyValueError;
//! use pycoro::{NativeCoroutine, coroutine_def, interruptible};
//!
//! Python::attach(|py| {
//!     let coro = NativeCoroutine::new(py, coroutine_def!("catcher"), async {
//!         // Wait forever on a Rust future, but let a thrown exception in.
//!         match interruptible(std::future::pending::<()>()).await {
//!             Ok(()) => unreachable!(),
//!             Err(e) => Python::attach(|py| Ok(e.into_value(py).into_any())),
//!         }
//!     })
//!     .unwrap();
//!     coro.call_method1("send", (py.None(),)).unwrap();
//!     let stop = coro
//!         .call_method1("throw", (PyValueError::new_err("stop").into_value(py),))
//!         .unwrap_err();
//!     // The body caught the ValueError and returned it.
//!     let caught = stop.value(py).getattr("value").unwrap();
//!     assert_eq!(caught.to_string(), "stop");
//! });
//! ```

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::task::{Context, Poll};

use pyo3::PyResult;

use crate::coroutine;

/// Let `future` receive, as `Err`, an exception thrown into the native
/// coroutine while it waits (see the [module docs](self)).
pub fn interruptible<F: Future>(future: F) -> Interruptible<F> {
    Interruptible {
        inner: future,
        id: None,
    }
}

/// The future returned by [`interruptible`]: `future`, inline (no
/// allocation), beside its wait-point id.
#[must_use = "futures do nothing unless awaited"]
pub struct Interruptible<F> {
    /// The future (structurally pinned: see `raw::project_interruptible`).
    pub(crate) inner: F,
    /// Its wait-point id in the coroutine, once it has been `Pending`.
    pub(crate) id: Option<NonZeroU64>,
}

impl<F: Future> Future for Interruptible<F> {
    type Output = PyResult<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (id, inner) = crate::raw::project_interruptible(self);
        if let Some(err) = id.and_then(coroutine::take_interrupt) {
            return Poll::Ready(Err(err));
        }
        match inner.poll(cx) {
            Poll::Ready(v) => Poll::Ready(Ok(v)),
            Poll::Pending => {
                *id = coroutine::listen(*id);
                Poll::Pending
            }
        }
    }
}
