//! Panics never cross into C: every callback CPython makes into the harness
//! (`step`, `traverse`, `clear`) and every poll of a Rust future runs under
//! [`std::panic::catch_unwind`], and a caught panic becomes a Python
//! `PanicException`.
//!
//! `PanicException` derives from `BaseException`, so `except Exception:`
//! does not swallow a bug.  There is ONE such type per interpreter, shared
//! by every extension built on the harness, whatever copy of the harness
//! each one links, and by PyO3 itself when it is built with this
//! repository's patches (pyo3-patches/): it lives in
//! `sys.modules["pyo3_runtime"]` as `PanicException` (PyO3's name for it),
//! created there by whichever extension needs it first (the place
//! recommended in the CPython discussion of PyO3's runtime types, for the
//! one type that users want to catch by name).  An existing `pyo3_runtime.PanicException` is used
//! as it is if it is a `BaseException` subclass; anything else there is a
//! `TypeError`, never replaced.
//!
//! ```
//! use pyo3::prelude::*;
//! Python::attach(|py| {
//!     let ty = pycoro::panic::panic_exception_type(py).unwrap();
//!     let again = py.import("pyo3_runtime").unwrap().getattr("PanicException").unwrap();
//!     assert!(ty.is(&again));
//!     let err = pycoro::panic::panic_to_pyerr(py, Box::new("boom"));
//!     assert!(err.is_instance(py, ty.as_any()));
//!     assert_eq!(err.value(py).to_string(), "boom");
//! });
//! ```

use std::any::Any;

use pyo3::exceptions::{PyBaseException, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyType};

/// Name of the module that holds the shared exception type.
pub(crate) const RUNTIME_MODULE: &str = "pyo3_runtime";

static PANIC_EXCEPTION: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The docstring PyO3 gives the type.
const PANIC_EXCEPTION_DOC: &std::ffi::CStr = c"
The exception raised when Rust code called from Python panics.

Like SystemExit, this exception is derived from BaseException so that
it will typically propagate all the way through the stack and cause the
Python interpreter to exit.
";

/// `sys.modules["pyo3_runtime"].PanicException`, found or created exactly
/// as the patched PyO3 does it (pyo3-patches/0001): `dict.setdefault` makes
/// the module and the attribute appear once even when two threads (or
/// pycoro and PyO3) race on the free-threaded build, and no lookup raises
/// on the usual path (PyO3's `PyErr::fetch` of any exception asks for
/// PyO3's copy of this type, which would then be created first and
/// replaced by a second one).
fn find_or_create(py: Python<'_>) -> PyResult<Py<PyType>> {
    let modules = py
        .import("sys")?
        .getattr("modules")?
        .cast_into::<PyDict>()?;
    let module = match modules.get_item(RUNTIME_MODULE)? {
        Some(m) => m,
        None => {
            let fresh = PyModule::new(py, RUNTIME_MODULE)?;
            modules.call_method1("setdefault", (RUNTIME_MODULE, fresh))?
        }
    };
    let namespace = module.getattr("__dict__")?.cast_into::<PyDict>()?;
    let ty = match namespace.get_item("PanicException")? {
        Some(found) => found,
        None => {
            let fresh = PyErr::new_type(
                py,
                c"pyo3_runtime.PanicException",
                // PyO3's own text (pyo3/src/panic.rs), whichever creates it first.
                Some(PANIC_EXCEPTION_DOC),
                Some(&py.get_type::<PyBaseException>()),
                None,
            )?;
            namespace.call_method1("setdefault", ("PanicException", fresh))?
        }
    };
    match ty.cast_into::<PyType>() {
        Ok(t) if t.is_subclass_of::<PyBaseException>()? => Ok(t.unbind()),
        _ => Err(PyTypeError::new_err(
            "sys.modules['pyo3_runtime'].PanicException is not a subclass of BaseException",
        )),
    }
}

/// The shared `pyo3_runtime.PanicException` type (looked up, or created
/// and registered, on first use).
pub fn panic_exception_type(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    PANIC_EXCEPTION
        .get_or_try_init(py, || find_or_create(py))
        .map(|t| t.bind(py).clone())
}

/// The message carried by a panic payload (`panic!` with a literal or a
/// format string gives `&str` or `String`).
pub(crate) fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Rust panic with a non-string payload".to_owned()
    }
}

/// Turn a caught panic into a `PanicException` carrying its message.
pub fn panic_to_pyerr(py: Python<'_>, payload: Box<dyn Any + Send>) -> PyErr {
    let msg = payload_message(payload.as_ref());
    match panic_exception_type(py) {
        Ok(ty) => PyErr::from_type(ty, (msg,)),
        // Cannot even make the type (e.g. sys.modules is gone): say so.
        Err(e) => e,
    }
}
