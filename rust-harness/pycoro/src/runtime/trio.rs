//! trio support: found when `trio` is imported and the caller runs in a
//! trio task (`trio.lowlevel.in_trio_task()`); the harness never imports
//! trio itself.
//!
//! - A coroutine that waits for its Rust waker AWAITs
//!   `trio.lowlevel.wait_task_rescheduled(abort)` (through the `TrioWait`
//!   helper of `glue.py`), and the waker reschedules the task with
//!   `TrioToken.run_sync_soon` (thread-safe).  A trio cancellation calls
//!   `abort`, which accepts it: `trio.Cancelled` is raised at that await and
//!   reaches the Rust future (see [`crate::interrupt`]).
//! - A coroutine already woken (e.g. [`crate::yield_now`]) AWAITs
//!   `trio.lowlevel.checkpoint()`: trio refuses bare yields, and a
//!   checkpoint is what `await trio.sleep(0)` does (a schedule point and a
//!   cancel point).

use std::ffi::CString;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// The Python helpers of `glue.py`, run once in a private namespace.
const GLUE: &str = include_str!("glue.py");

/// What the harness uses of trio, looked up once trio is imported.
pub(crate) struct Trio {
    lowlevel: Py<PyAny>,
    in_trio_task: Py<PyAny>,
    checkpoint: Py<PyAny>,
    wait_class: Py<PyAny>,
}

static TRIO: PyOnceLock<Trio> = PyOnceLock::new();
static MODULES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// `sys.modules` (the interpreter's module dict; cached).
pub(crate) fn sys_modules(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    MODULES
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("sys")?
                    .getattr("modules")?
                    .cast_into::<PyDict>()?
                    .unbind(),
            )
        })
        .map(|m| m.bind(py).clone())
}

static GLUE_NS: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// `name` from the namespace of `glue.py` (run once).
pub(crate) fn glue<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let ns = GLUE_NS.get_or_try_init(py, || {
        let ns = PyDict::new(py);
        ns.set_item("__name__", "pycoro.runtime.glue")?;
        let code = CString::new(GLUE).expect("glue.py has no NUL byte");
        py.run(&code, Some(&ns), None)?;
        Ok::<_, PyErr>(ns.unbind())
    })?;
    ns.bind(py).get_item(name)?.ok_or_else(|| {
        pyo3::exceptions::PySystemError::new_err(format!("glue.py defines no {name}"))
    })
}

fn load(py: Python<'_>) -> PyResult<Trio> {
    let lowlevel = py.import("trio.lowlevel")?;
    let wait_class = glue(py, "TrioWait")?;
    Ok(Trio {
        in_trio_task: lowlevel.getattr("in_trio_task")?.unbind(),
        checkpoint: lowlevel.getattr("checkpoint")?.unbind(),
        wait_class: wait_class.unbind(),
        lowlevel: lowlevel.into_any().unbind(),
    })
}

/// trio's helpers if the caller runs in a trio task, else `None` (at the
/// cost of one `sys.modules` lookup while trio was never imported).
pub(crate) fn current(py: Python<'_>) -> PyResult<Option<&Trio>> {
    let trio = match TRIO.get(py) {
        Some(t) => t,
        None => {
            if sys_modules(py)?.get_item(intern!(py, "trio"))?.is_none() {
                return Ok(None);
            }
            TRIO.get_or_try_init(py, || load(py))?
        }
    };
    Ok(trio.in_trio_task.call0(py)?.is_truthy(py)?.then_some(trio))
}

impl Trio {
    /// `trio.lowlevel.checkpoint()`: the coroutine to AWAIT for a yield.
    pub(crate) fn checkpoint(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.checkpoint.call0(py)
    }

    /// A `TrioWait` for the current task: `.wait()` is the awaitable,
    /// `.wake()` the thread-safe wake-up.
    pub(crate) fn waiter(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.wait_class.call1(py, (self.lowlevel.clone_ref(py),))
    }
}
