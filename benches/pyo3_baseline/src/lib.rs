//! `pyo3_baseline`: PyO3 0.30's own coroutines (`experimental-async`), the
//! baseline the benchmarks compare native coroutines with.  Each function
//! mirrors the `pycoro_harness` function of the same name; its `async def`
//! twin is in its doc comment.  PyO3's `Coroutine` cannot await a Python
//! awaitable, so there is no `await_` here (the benchmark reports n/a).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pyo3::prelude::*;

/// `async def ready(value): return value`
#[pyfunction]
async fn ready(value: Py<PyAny>) -> Py<PyAny> {
    value
}

/// Pending once, waking itself first: PyO3's coroutine then yields `None`
/// (a bare yield, like `await asyncio.sleep(0)`).
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

/// `async def yield_now(n):` `for _ in range(n): await asyncio.sleep(0)`,
/// `return n`.
#[pyfunction]
async fn yield_now(n: usize) -> usize {
    for _ in 0..n {
        YieldNow(false).await;
    }
    n
}

/// The iterator of [`count`]: PyO3 has no generators, so a pyclass with
/// `__next__` is what a PyO3 user writes.
#[pyclass]
struct Count {
    next: usize,
    end: usize,
}

#[pymethods]
impl Count {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self) -> Option<usize> {
        if self.next < self.end {
            self.next += 1;
            Some(self.next - 1)
        } else {
            None
        }
    }
}

/// `def count(n): yield from range(n)`
#[pyfunction]
fn count(n: usize) -> Count {
    Count { next: 0, end: n }
}

/// The module.
#[pymodule]
fn pyo3_baseline(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ready, m)?)?;
    m.add_function(wrap_pyfunction!(yield_now, m)?)?;
    m.add_function(wrap_pyfunction!(count, m)?)?;
    Ok(())
}
