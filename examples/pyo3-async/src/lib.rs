//! `pyo3_async_example`: PyO3 `#[pyfunction] async fn`s, written as any PyO3
//! user writes them.  Built with the patched PyO3's `native-coroutines`
//! feature, each call returns a true Python coroutine
//! (`type(c) is types.CoroutineType`) whose frame is this file, on a CPython
//! with native frames, and PyO3's own `Coroutine` on a stock CPython.
//!
//! Each function's `async def` twin is in its doc comment
//! (`tests/test_pyo3_async.py` compares them).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pyo3::coroutine::CancelHandle;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// `async def ready(value): return value`
#[pyfunction]
async fn ready(value: Py<PyAny>) -> Py<PyAny> {
    value
}

/// `async def sleep(seconds, value): await <sleep seconds>; return value`,
/// woken by a Rust thread (see [`ThreadSleep`]).
#[pyfunction]
async fn sleep(seconds: f64, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    ThreadSleep::new(duration(seconds)?).await;
    Ok(value)
}

/// `async def yield_now(n): for _ in range(n): await <checkpoint>; return n`:
/// suspends `n` times, each a bare yield to whatever runs it (see
/// [`YieldNow`]).
#[pyfunction]
async fn yield_now(n: usize) -> usize {
    for _ in 0..n {
        YieldNow(false).await;
    }
    n
}

/// `async def fail(message): raise ValueError(message)`
#[pyfunction]
async fn fail(message: String) -> PyResult<()> {
    Err(PyValueError::new_err(message))
}

/// `async def await_py(awaitable): return await awaitable`
#[pyfunction]
async fn await_py(awaitable: Py<PyAny>) -> PyResult<Py<PyAny>> {
    pyo3::coroutine::await_py(awaitable).await
}

/// `async def call(callable): return callable()`: Python code called
/// from the body, while the coroutine runs.
#[pyfunction]
async fn call(callable: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Python::attach(|py| callable.call0(py))
}

/// `async def panic(message): <a Rust panic>`: raises
/// `pyo3_runtime.PanicException(message)`.
#[pyfunction]
async fn panic(message: String) {
    panic!("{message}")
}

/// ```python
/// async def cancellable_sleep(seconds, value):
///     try:
///         await <sleep seconds>
///     except BaseException as e:
///         return e
///     return value
/// ```
///
/// An exception thrown into the coroutine (`task.cancel()` throws
/// `CancelledError`) reaches the [`CancelHandle`], which ends the sleep.
#[pyfunction]
async fn cancellable_sleep(
    seconds: f64,
    value: Py<PyAny>,
    #[pyo3(cancel_handle)] mut cancel: CancelHandle,
) -> PyResult<Py<PyAny>> {
    let mut sleeping = pin!(ThreadSleep::new(duration(seconds)?));
    let thrown = poll_fn(|cx| match cancel.poll_cancelled(cx) {
        Poll::Ready(exc) => Poll::Ready(Some(exc)),
        Poll::Pending => sleeping.as_mut().poll(cx).map(|()| None),
    })
    .await;
    Ok(thrown.unwrap_or(value))
}

/// Pending once, waking itself first: the coroutine yields to its runner
/// once and is resumed at once (`asyncio.sleep(0)`, trio's checkpoint).
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn duration(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// What the sleeping thread and the future share.
#[derive(Default)]
struct Shared {
    state: Mutex<SleepState>,
    changed: Condvar,
}

#[derive(Default)]
struct SleepState {
    done: bool,
    dropped: bool,
    waker: Option<Waker>,
}

/// A future that a `std::thread` completes after a delay: the waker is
/// called from that thread, not from the event loop's.  Dropping the future
/// (the coroutine was closed or cancelled) ends the thread without a wake.
struct ThreadSleep {
    duration: Duration,
    shared: Arc<Shared>,
    started: bool,
}

impl ThreadSleep {
    fn new(duration: Duration) -> Self {
        Self {
            duration,
            shared: Arc::default(),
            started: false,
        }
    }
}

impl Future for ThreadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = this.shared.state.lock().unwrap();
        if state.done {
            return Poll::Ready(());
        }
        state.waker = Some(cx.waker().clone());
        if !this.started {
            this.started = true;
            let deadline = Instant::now() + this.duration;
            let shared = Arc::clone(&this.shared);
            std::thread::spawn(move || {
                let mut state = shared.state.lock().unwrap();
                loop {
                    if state.dropped {
                        return;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    state = shared
                        .changed
                        .wait_timeout(state, deadline - now)
                        .unwrap()
                        .0;
                }
                state.done = true;
                let waker = state.waker.take();
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
            });
        }
        Poll::Pending
    }
}

impl Drop for ThreadSleep {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap();
        state.dropped = true;
        state.waker = None;
        self.shared.changed.notify_all();
    }
}

/// The module.  `gil_used = false`: importing it keeps the GIL off on a
/// free-threaded (3.13t) build.
#[pymodule(gil_used = false)]
fn pyo3_async_example(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ready, m)?)?;
    m.add_function(wrap_pyfunction!(sleep, m)?)?;
    m.add_function(wrap_pyfunction!(yield_now, m)?)?;
    m.add_function(wrap_pyfunction!(fail, m)?)?;
    m.add_function(wrap_pyfunction!(await_py, m)?)?;
    m.add_function(wrap_pyfunction!(call, m)?)?;
    m.add_function(wrap_pyfunction!(panic, m)?)?;
    m.add_function(wrap_pyfunction!(cancellable_sleep, m)?)?;
    Ok(())
}
