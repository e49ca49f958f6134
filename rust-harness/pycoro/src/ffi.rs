//! Raw C declarations: everything `pyo3-ffi` declares, and the native-frame
//! API of the patched CPython from `pycoro-ffi` (its types and constants;
//! its functions are found at run time, see [`api`]).  No logic lives here;
//! see `crate::raw` for the checked wrappers.  Private to the crate.

pub use pycoro_ffi::{
    NativeFramesApi, PyUnstable_NATIVE_AWAIT, PyUnstable_NATIVE_ERROR, PyUnstable_NATIVE_RETURN,
    PyUnstable_NATIVE_YIELD, PyUnstable_NativeFrameDef, PyUnstable_NativeStep,
};
pub use pyo3::ffi::*;

use pyo3::PyResult;
use pyo3::exceptions::PyRuntimeError;

/// The native frames API of the running interpreter, or `RuntimeError` on
/// one without it (a stock CPython: the same binary imports there, and
/// only making a native object fails).
#[inline]
pub fn api() -> PyResult<&'static NativeFramesApi> {
    pycoro_ffi::api().ok_or_else(|| {
        PyRuntimeError::new_err(
            "this interpreter has no native frames API (PyUnstable_Coro_NewNative): \
             pycoro needs a CPython built with the native frames patches",
        )
    })
}
