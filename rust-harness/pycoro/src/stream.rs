//! Rust streams as true CPython async generators.
//!
//! [`NativeAsyncGenerator::new`] wraps any
//! `futures_core::Stream<Item = PyResult<Py<PyAny>>> + Send + 'static` in an
//! object for which `type(g) is types.AsyncGeneratorType`: CPython's own
//! async generator type, whose frame is a native frame (made by
//! `PyUnstable_AsyncGen_NewNative`).  `async for`, `anext()`, `asend`/`athrow`/
//! `aclose` and their "already running" errors, `ag_await`, `ag_running`,
//! `sys.set_asyncgen_hooks` (so asyncio's `shutdown_asyncgens` and trio's
//! finalizer close a generator left suspended) are CPython's own machinery.
//!
//! # How an item is produced
//!
//! The stream is polled inside a native *coroutine* made for each item
//! (with the [`crate::coroutine`] machinery: [`crate::py_await`], wakers
//! that suspend the task in asyncio or trio, panics as `PanicException`),
//! which the async generator awaits.  So the body is, in Python terms:
//!
//! ```python
//! async def agen():
//!     while (item := await next_item(stream)) is not END:
//!         yield item
//! ```
//!
//! and between two items the stream can await Python awaitables or wait
//! for its waker; while it does, `ag_await` is that item coroutine (same
//! name, file and lines as the generator).  `Some(Ok(v))` yields `v`,
//! `Some(Err(e))` raises `e`, `None` ends the iteration
//! (`StopAsyncIteration`).  A value passed to `asend()` is ignored.
//!
//! An exception thrown in while the generator is suspended at a yield
//! (`athrow()`, or the `GeneratorExit` of `aclose()`) cannot be caught by a
//! stream: it propagates and the generator finishes.  Thrown in while an
//! item is being produced, it goes to the item coroutine first (so a
//! `py_await` inside the stream sees it as an error).  Whenever the
//! generator finishes (exhausted, raised, closed, or collected), the stream
//! is dropped at once (its `Drop` runs).
//!
//! ```
//! use pyo3::prelude::*;
//! use pycoro::{NativeAsyncGenerator, async_generator_def};
//!
//! Python::attach(|py| {
//!     let items = (0..3).map(|i: i64| Python::attach(|py| Ok(i.into_pyobject(py)?.into_any().unbind())));
//!     let agen = NativeAsyncGenerator::new(
//!         py,
//!         async_generator_def!("three"),
//!         futures_util::stream::iter(items),
//!     )
//!     .unwrap();
//!     let types = py.import("types").unwrap();
//!     assert!(agen.get_type().is(&types.getattr("AsyncGeneratorType").unwrap()));
//!     let globals = pyo3::types::PyDict::new(py);
//!     globals.set_item("agen", agen).unwrap();
//!     py.run(
//!         c"import asyncio\nasync def main(): return [x async for x in agen]\nresult = asyncio.run(main())",
//!         Some(&globals),
//!         None,
//!     )
//!     .unwrap();
//!     let result: Vec<i64> = globals.get_item("result").unwrap().unwrap().extract().unwrap();
//!     assert_eq!(result, [0, 1, 2]);
//! });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, TryLockError};
use std::task::{Context, Poll};

use futures_core::Stream;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

use crate::coroutine::NativeCoroutine;
use crate::generator::GeneratorDef;
use crate::raw::{Frame, NativeBody, Sent, Step};

/// The boxed stream a native async generator runs.
type BoxStream = Pin<Box<dyn Stream<Item = PyResult<Py<PyAny>>> + Send + 'static>>;

/// The stream, shared by the generator and the item coroutine polling it;
/// `None` once dropped.
type SharedStream = Arc<Mutex<Option<BoxStream>>>;

/// What an item coroutine returns when the stream has ended: a private
/// object no stream can yield.
static END: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn end_marker(py: Python<'_>) -> &Py<PyAny> {
    END.get_or_init(py, || PyList::empty(py).into_any().unbind())
}

/// Drop the stream now (its `Drop` may run Python code: GIL held).
fn drop_stream(stream: &SharedStream) {
    let taken = match stream.try_lock() {
        Ok(mut guard) => guard.take(),
        Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
        // Being polled: the item coroutine that polls it drops its clone
        // when it finishes.
        Err(TryLockError::WouldBlock) => None,
    };
    drop(taken);
}

/// The future of one item coroutine: the next item of the stream, or
/// [`END`].
struct NextItem {
    stream: SharedStream,
}

impl Future for NextItem {
    type Output = PyResult<Py<PyAny>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut guard = match self.stream.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Poll::Ready(Err(PyRuntimeError::new_err(
                    "the stream of this native async generator is already being polled",
                )));
            }
        };
        let Some(stream) = guard.as_mut() else {
            return Poll::Ready(Ok(Python::attach(|py| end_marker(py).clone_ref(py))));
        };
        match stream.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(item)) => Poll::Ready(item),
            Poll::Ready(None) => {
                // Ended: drop it now, not when the generator is collected.
                let ended = guard.take();
                drop(guard);
                drop(ended);
                Poll::Ready(Ok(Python::attach(|py| end_marker(py).clone_ref(py))))
            }
        }
    }
}

/// The body stored in the async generator's native state.
struct StreamBody {
    def: &'static GeneratorDef,
    stream: SharedStream,
    /// Whether the generator awaits an item coroutine.
    awaiting: bool,
}

impl StreamBody {
    fn finish(&mut self, step: Step) -> Step {
        drop_stream(&self.stream);
        step
    }
}

impl NativeBody for StreamBody {
    fn step<'py>(self: Pin<&mut Self>, frame: &Frame<'_, 'py>, sent: Sent<'_, 'py>) -> Step {
        let py = frame.py();
        let this = Pin::into_inner(self);
        this.step_unpinned(py, sent)
    }
}

impl StreamBody {
    fn step_unpinned(&mut self, py: Python<'_>, sent: Sent<'_, '_>) -> Step {
        if std::mem::take(&mut self.awaiting) {
            return match sent {
                Ok(v) if v.is(end_marker(py)) => self.finish(Step::Return(py.None())),
                Ok(v) => Step::Yield(v.to_owned().unbind()),
                // Raised by the stream (in the item coroutine) or thrown
                // in while it ran: it passes through, as through `await`.
                Err(e) => self.finish(Step::Error(e)),
            };
        }
        if let Err(e) = sent {
            // athrow() or aclose() at a yield: a stream cannot catch it.
            return self.finish(Step::Error(e));
        }
        let next = NextItem {
            stream: self.stream.clone(),
        };
        match NativeCoroutine::new(py, self.def.base(), next) {
            Ok(coro) => {
                self.awaiting = true;
                Step::Await(coro.unbind())
            }
            Err(e) => self.finish(Step::Raise(e)),
        }
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        // Runs in `clear` (GIL held): the generator can no longer run.
        drop_stream(&self.stream);
    }
}

/// Namespace of the constructors of native async generators.
pub struct NativeAsyncGenerator;

impl NativeAsyncGenerator {
    /// A true async generator (`types.AsyncGeneratorType`) yielding the
    /// items of `stream` (see the module docs).  `def` must come from
    /// [`async_generator_def!`](crate::async_generator_def) (`TypeError`
    /// for a generator def).
    #[allow(clippy::new_ret_no_self)] // a Python object, not a Rust value
    pub fn new<'py, S>(
        py: Python<'py>,
        def: &'static GeneratorDef,
        stream: S,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        S: Stream<Item = PyResult<Py<PyAny>>> + Send + 'static,
    {
        let body = StreamBody {
            def,
            stream: Arc::new(Mutex::new(Some(Box::pin(stream)))),
            awaiting: false,
        };
        def.new_object(py, body)
    }
}
