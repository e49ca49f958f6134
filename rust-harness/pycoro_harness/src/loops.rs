//! Probes for running native coroutines under every event loop
//! (`tests/test_loops.py`, `tests/test_harness_programs.py`).
//!
//! Each function's `async def` twin is in its doc comment (and in
//! `tests/loops.py`), written with the runtime-neutral `sleep` and
//! `checkpoint` helpers there.

use std::time::Duration;

use pycoro::runtime::{self, Runtime};
use pycoro::{NativeCoroutine, coroutine_def, interruptible};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::{DropProbe, caught};

/// The runtime the harness finds for the caller: `"trio"`, `"asyncio"` or
/// `None` (see `pycoro::runtime`).
#[pyfunction]
fn current_runtime(py: Python<'_>) -> PyResult<Option<&'static str>> {
    Ok(match runtime::current(py)? {
        Runtime::Trio => Some("trio"),
        Runtime::Asyncio(_) => Some("asyncio"),
        Runtime::None => None,
    })
}

/// ```python
/// async def catch_sleep(seconds, exc_type, result=None):
///     try:
///         await sleep(seconds)        # woken by a Rust thread
///     except exc_type as e:
///         return e
///     return result
/// ```
/// The Rust future holds a drop probe (`drops()` counts it).
#[pyfunction]
#[pyo3(signature = (seconds, exc_type, result = None))]
fn catch_sleep<'py>(
    py: Python<'py>,
    seconds: f64,
    exc_type: Bound<'py, PyType>,
    result: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let exc_type = exc_type.unbind();
    let probe = DropProbe;
    NativeCoroutine::new(py, coroutine_def!("catch_sleep"), async move {
        let _probe = probe;
        match interruptible(pycoro::sleep(duration)).await {
            Ok(()) => Ok(result.unwrap_or_else(|| Python::attach(|py| py.None()))),
            Err(e) => caught(e, &exc_type),
        }
    })
}

/// ```python
/// async def catch_yield(n, exc_type):
///     caught = []
///     for _ in range(n):
///         try:
///             await checkpoint()
///         except exc_type as e:
///             caught.append(e)
///     return caught
/// ```
#[pyfunction]
fn catch_yield<'py>(
    py: Python<'py>,
    n: usize,
    exc_type: Bound<'py, PyType>,
) -> PyResult<Bound<'py, PyAny>> {
    let exc_type = exc_type.unbind();
    NativeCoroutine::new(py, coroutine_def!("catch_yield"), async move {
        let mut caught_so_far = Vec::new();
        for _ in 0..n {
            if let Err(e) = interruptible(pycoro::yield_now()).await {
                caught_so_far.push(caught(e, &exc_type)?);
            }
        }
        Python::attach(|py| {
            Ok(pyo3::types::PyList::new(py, caught_so_far)?
                .into_any()
                .unbind())
        })
    })
}

/// Register this module's functions in the probe module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(current_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(catch_sleep, m)?)?;
    m.add_function(wrap_pyfunction!(catch_yield, m)?)?;
    Ok(())
}
