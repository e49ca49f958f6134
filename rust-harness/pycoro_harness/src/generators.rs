//! Probes for native generators and async generators
//! (`tests/test_generators.py`).  Each function's Python twin is in its doc
//! comment; `checkpoint()` is the runtime's `sleep(0)` (asyncio's, trio's,
//! or anyio's).

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::stream;
use pycoro::{NativeAsyncGenerator, NativeGenerator, async_generator_def, generator_def, py_await};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// Counts the [`GenDropProbe`]s dropped: iterators and streams whose
/// `Drop` ran.
static GEN_DROPPED: AtomicUsize = AtomicUsize::new(0);

struct GenDropProbe;

impl Drop for GenDropProbe {
    fn drop(&mut self) {
        GEN_DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

fn int(i: usize) -> PyResult<Py<PyAny>> {
    Python::attach(|py| Ok(i.into_pyobject(py)?.into_any().unbind()))
}

/// ```python
/// def count(n):
///     yield from range(n)
/// ```
/// The Rust iterator holds a drop probe (see [`gen_drops`]).
#[pyfunction]
fn count(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyAny>> {
    let probe = GenDropProbe;
    let mut i = 0;
    NativeGenerator::from_fn(py, generator_def!("count"), move |py| {
        let _probe = &probe;
        (i < n).then(|| {
            i += 1;
            Ok((i - 1).into_pyobject(py)?.into_any().unbind())
        })
    })
}

/// ```python
/// def gen_fail(n, exc):
///     yield from range(n)
///     raise exc
/// ```
#[pyfunction]
fn gen_fail<'py>(py: Python<'py>, n: usize, exc: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let mut err = Some(PyErr::from_value(exc));
    let items = (0..=n).map_while(move |i| {
        if i < n {
            Some(int(i))
        } else {
            err.take().map(Err)
        }
    });
    NativeGenerator::new(py, generator_def!("gen_fail"), items)
}

/// A native generator whose iterator panics with `msg` after `n` items
/// (`pyo3_runtime.PanicException`).
#[pyfunction]
fn gen_panic(py: Python<'_>, n: usize, msg: String) -> PyResult<Bound<'_, PyAny>> {
    let items = (0..=n).map(move |i| {
        if i == n {
            panic!("{msg}");
        }
        int(i)
    });
    NativeGenerator::new(py, generator_def!("gen_panic"), items)
}

/// ```python
/// async def acount(n):
///     for i in range(n):
///         await checkpoint()
///         yield i
/// ```
/// The suspension is the harness's [`pycoro::yield_now`] (a schedule point
/// of whatever runtime drives the task).  The Rust stream holds a drop
/// probe (see [`gen_drops`]).
#[pyfunction]
fn acount(py: Python<'_>, n: usize) -> PyResult<Bound<'_, PyAny>> {
    let probe = GenDropProbe;
    let items = stream::unfold((0usize, probe), move |(i, probe)| async move {
        if i >= n {
            return None;
        }
        pycoro::yield_now().await;
        Some((int(i), (i + 1, probe)))
    });
    NativeAsyncGenerator::new(py, async_generator_def!("acount"), items)
}

/// ```python
/// async def agen_await(*awaitables):
///     for aw in awaitables:
///         yield await aw
/// ```
/// An exception raised by an awaitable propagates (and ends the generator).
#[pyfunction]
#[pyo3(signature = (*awaitables))]
fn agen_await<'py>(
    py: Python<'py>,
    awaitables: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let awaitables: Vec<Py<PyAny>> = awaitables.iter().map(Bound::unbind).collect();
    let probe = GenDropProbe;
    let items = stream::unfold(
        (awaitables.into_iter(), Some(probe)),
        |(mut rest, probe)| async move {
            let aw = rest.next()?;
            let item = py_await(aw).await;
            // After an error the stream ends.
            let rest = if item.is_err() {
                Vec::new().into_iter()
            } else {
                rest
            };
            Some((item, (rest, probe)))
        },
    );
    NativeAsyncGenerator::new(py, async_generator_def!("agen_await"), items)
}

/// A native async generator whose stream panics with `msg` after `n`
/// items (`pyo3_runtime.PanicException`).
#[pyfunction]
fn agen_panic(py: Python<'_>, n: usize, msg: String) -> PyResult<Bound<'_, PyAny>> {
    let items = stream::iter((0..=n).map(move |i| {
        if i == n {
            panic!("{msg}");
        }
        int(i)
    }));
    NativeAsyncGenerator::new(py, async_generator_def!("agen_panic"), items)
}

/// How many iterators and streams made by [`count`], [`acount`] and
/// [`agen_await`] were dropped.
#[pyfunction]
fn gen_drops() -> usize {
    GEN_DROPPED.load(Ordering::SeqCst)
}

/// Add the generator probes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(count, m)?)?;
    m.add_function(wrap_pyfunction!(gen_fail, m)?)?;
    m.add_function(wrap_pyfunction!(gen_panic, m)?)?;
    m.add_function(wrap_pyfunction!(acount, m)?)?;
    m.add_function(wrap_pyfunction!(agen_await, m)?)?;
    m.add_function(wrap_pyfunction!(agen_panic, m)?)?;
    m.add_function(wrap_pyfunction!(gen_drops, m)?)?;
    Ok(())
}
