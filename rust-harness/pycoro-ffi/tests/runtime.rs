//! Run-time detection against the interpreter the tests embed: the
//! patched one finds every function and makes a working native function
//! from them; `PYCORO_NATIVE_FRAMES=0` (tests/disabled.rs) and stock
//! headers report the API absent.

use std::ffi::c_void;
use std::ptr;

use pycoro_ffi::*;
use pyo3::prelude::*;
use pyo3::types::PyDict;

#[test]
fn the_api_matches_the_build_time_detection() {
    // Built against the patched headers <=> found at run time (the tests
    // run in the interpreter they were built for).
    assert_eq!(
        api().is_some(),
        HEADER_VERSION.is_some(),
        "{HEADER_VERSION:?}"
    );
    if let Some(api) = api() {
        assert_eq!(api.version, API_VERSION);
        // Cached: the same table every time.
        assert!(ptr::eq(api, pycoro_ffi::api().unwrap()));
    }
}

unsafe extern "C" fn step(
    _tstate: *mut pyo3::ffi::PyThreadState,
    _gen: *mut pyo3::ffi::PyObject,
    state: *mut c_void,
    _sent: *mut pyo3::ffi::PyObject,
    result: *mut *mut pyo3::ffi::PyObject,
) -> PyUnstable_NativeStep {
    // SAFETY: the state is at least 16 zero-filled bytes; `result` is
    // writable; the GIL is held during a step.
    unsafe {
        let n = state.cast::<i64>();
        *n += 1;
        *result = pyo3::ffi::PyLong_FromLongLong(*n);
        if *n < 3 {
            PyUnstable_NATIVE_YIELD
        } else {
            PyUnstable_NATIVE_RETURN
        }
    }
}

static DEF: PyUnstable_NativeFrameDef = PyUnstable_NativeFrameDef {
    size: size_of::<PyUnstable_NativeFrameDef>() as pyo3::ffi::Py_ssize_t,
    step: Some(step),
    traverse: None,
    clear: None,
    state_size: 16,
    lineno_offset: 8,
    flags: 0,
};

#[test]
fn a_native_coroutine_made_through_the_table_runs() {
    let Some(api) = api() else {
        assert!(HEADER_VERSION.is_none());
        return;
    };
    Python::attach(|py| {
        let filename = pyo3::types::PyString::new(py, file!());
        let name = pyo3::types::PyString::new(py, "counter");
        let argnames = pyo3::types::PyTuple::new(py, ["a", "b"]).unwrap();
        // SAFETY: GIL held; live str and tuple objects; results are new
        // references or NULL with an exception set.
        let code = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (api.PyUnstable_Code_NewNative)(
                    filename.as_ptr(),
                    name.as_ptr(),
                    name.as_ptr(),
                    line!() as i32,
                    10,
                    pyo3::ffi::CO_COROUTINE,
                    argnames.as_ptr(),
                )
                .cast(),
            )
        }
        .unwrap();
        let flags: i32 = code.getattr("co_flags").unwrap().extract().unwrap();
        assert_ne!(flags & CO_NATIVE, 0);
        assert_eq!(
            code.getattr("co_argcount")
                .unwrap()
                .extract::<i32>()
                .unwrap(),
            2
        );
        let globals = PyDict::new(py);
        // SAFETY: as above; DEF is a static.
        let func = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (api.PyUnstable_NativeFunction_New)(&DEF, code.as_ptr(), globals.as_ptr()),
            )
        }
        .unwrap();
        // SAFETY: as above; NULL name and qualname are the code's, and
        // `made` is a valid out-pointer for the call.
        let mut made: *mut c_void = ptr::null_mut();
        let coro = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (api.PyUnstable_Coro_NewNative)(
                    func.as_ptr(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    &mut made,
                ),
            )
        }
        .unwrap();
        let types = py.import("types").unwrap();
        assert!(coro.get_type().is(types.getattr("CoroutineType").unwrap()));
        // SAFETY: as above.
        let state = unsafe { (api.PyUnstable_Gen_GetNativeState)(coro.as_ptr(), &DEF) };
        assert!(!state.is_null());
        assert_eq!(state, made);
        let send = || coro.call_method1("send", (py.None(),));
        assert_eq!(send().unwrap().extract::<i64>().unwrap(), 1);
        assert_eq!(send().unwrap().extract::<i64>().unwrap(), 2);
        let stop = send().unwrap_err();
        assert!(stop.is_instance_of::<pyo3::exceptions::PyStopIteration>(py));
        assert_eq!(
            stop.value(py)
                .getattr("value")
                .unwrap()
                .extract::<i64>()
                .unwrap(),
            3
        );
    });
}
