//! Raw bindings of CPython's *native frames* API: coroutines, generators and
//! asynchronous generators whose frame runs a C step function
//! (`PyUnstable_Coro_NewNative` and friends, in the patched
//! `Include/cpython/genobject.h` and `code.h`; documented in
//! `Doc/c-api/coro.rst`).  A layer like `pyo3-ffi`, which it builds on:
//! `#[repr(C)]` types, constants and function types written by hand from
//! the headers, all `unsafe`, no logic beyond finding the functions.
//!
//! # Two detections
//!
//! - **At build time**, the build script has the C compiler evaluate the
//!   feature macro `Py_HAVE_NATIVE_FRAMES` in the headers of the
//!   interpreter pyo3-ffi builds for.  When it is defined (to
//!   [`API_VERSION`]) the crate is built with `cfg(Py_HAVE_NATIVE_FRAMES)`
//!   and [`HEADER_VERSION`] is `Some(version)`; on stock headers the crate
//!   builds all the same, with `HEADER_VERSION == None`.  Build scripts of
//!   dependents read it as `DEP_PYCORO_FFI_NATIVE_FRAMES` (0 when absent).
//! - **At run time**, [`api`] resolves the functions on first use
//!   (`dlsym(RTLD_DEFAULT, ..)` on unix) and caches the table.  The
//!   patched interpreter reports the same SOABI as the stock one, so an
//!   extension built against it installs on stock CPython 3.13 too: it
//!   must not link the functions (the import would fail with an undefined
//!   symbol), and it finds out here that they are absent.  `api()` is
//!   `None` then, when the crate was built without the cfg, on platforms
//!   without `dlsym` (Windows), or when the environment variable
//!   `PYCORO_NATIVE_FRAMES` is `0` when `api()` is first called (to test
//!   a fallback path on a patched interpreter).
//!
//! ```
//! // On the patched interpreter this finds the API; on stock CPython the
//! // same binary gets `None`.
//! match pycoro_ffi::api() {
//!     Some(api) => assert_eq!(api.version, pycoro_ffi::API_VERSION),
//!     None => println!("no native frames here"),
//! }
//! ```
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use pyo3_ffi::{Py_ssize_t, PyCodeObject, PyObject, PyThreadState, visitproc};

/// The version of the native frames API these bindings are written for:
/// the value the patched headers give `Py_HAVE_NATIVE_FRAMES`.
pub const API_VERSION: u32 = 1;

/// The value of `Py_HAVE_NATIVE_FRAMES` in the headers this crate was built
/// against, if they define it (to [`API_VERSION`]); `None` on stock headers.
pub const HEADER_VERSION: Option<u32> = match parse_u32(env!("PYCORO_FFI_HEADER_VERSION")) {
    0 => None,
    v => Some(v),
};

const fn parse_u32(s: &str) -> u32 {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut n = 0u32;
    while i < bytes.len() {
        n = n * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// `CO_NATIVE` (`Include/cpython/code.h`): the `co_flags` bit of the code
/// object of a native frame, made by `PyUnstable_Code_NewNative`.
pub const CO_NATIVE: c_int = 0x1000_0000;

/// `CO_GENERATOR` (`Include/cpython/code.h`): the kind flag a native
/// generator's code object is made with (`PyUnstable_Code_NewNative`'s
/// `flags`).  Declared here as well as in `pyo3-ffi` because `pyo3-ffi`
/// hides the `CO_*` flags under the limited API (`abi3`), where a binding
/// still compiles its native path and only finds the API absent at run
/// time.
pub const CO_GENERATOR: c_int = 0x0020;

/// `CO_COROUTINE`: the kind flag of a native coroutine's code object (see
/// [`CO_GENERATOR`]).
pub const CO_COROUTINE: c_int = 0x0080;

/// `CO_ASYNC_GENERATOR`: the kind flag of a native async generator's code
/// object (see [`CO_GENERATOR`]).
pub const CO_ASYNC_GENERATOR: c_int = 0x0200;

/// `PyUnstable_NativeStep`: what a step function asks the frame to do next
/// (a C enum, an `int` in the ABI).
pub type PyUnstable_NativeStep = c_int;
/// An exception is set; `*result` is untouched.
pub const PyUnstable_NATIVE_ERROR: PyUnstable_NativeStep = -1;
/// Finished; `*result` is the return value.
pub const PyUnstable_NATIVE_RETURN: PyUnstable_NativeStep = 0;
/// Suspend; `*result` is yielded to the caller.
pub const PyUnstable_NATIVE_YIELD: PyUnstable_NativeStep = 1;
/// `*result` is an awaitable (in a generator: an iterable): await it, then
/// call the step again with its result, or with `NULL` and its exception
/// set.
pub const PyUnstable_NATIVE_AWAIT: PyUnstable_NativeStep = 2;
/// As [`PyUnstable_NATIVE_AWAIT`], but `*result` is the iterator itself,
/// already obtained by the step (from `__await__`, `__anext__` or
/// `iter()`).
pub const PyUnstable_NATIVE_AWAIT_ITER: PyUnstable_NativeStep = 3;

/// `PyUnstable_NativeStepFunc`: advance the body of `gen` (see
/// [`PyUnstable_NativeFrameDef`]).  `sent` is borrowed (`NULL` with an
/// exception set when one must be handled); `*result` receives a new
/// reference for RETURN, YIELD, AWAIT and AWAIT_ITER.
pub type PyUnstable_NativeStepFunc = unsafe extern "C" fn(
    tstate: *mut PyThreadState,
    gen_: *mut PyObject,
    state: *mut c_void,
    sent: *mut PyObject,
    result: *mut *mut PyObject,
) -> PyUnstable_NativeStep;

/// `traverse` of a [`PyUnstable_NativeFrameDef`]: visit the Python objects
/// owned by the state (called on a zero-filled state too).
pub type PyUnstable_NativeTraverseFunc =
    unsafe extern "C" fn(state: *mut c_void, visit: visitproc, arg: *mut c_void) -> c_int;

/// `clear` of a [`PyUnstable_NativeFrameDef`]: release the state, exactly
/// once (possibly zero-filled).
pub type PyUnstable_NativeClearFunc = unsafe extern "C" fn(state: *mut c_void);

/// `PyUnstable_NativeFrameDef`: the native body of a generator, coroutine
/// or asynchronous generator.  It must outlive every object made from it
/// (normally a `static`, or a promoted constant) and never change.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyUnstable_NativeFrameDef {
    /// `size_of::<PyUnstable_NativeFrameDef>()` as the caller was compiled.
    pub size: Py_ssize_t,
    /// The step function.
    pub step: Option<PyUnstable_NativeStepFunc>,
    /// Visit the objects the state owns (may be `None`).
    pub traverse: Option<PyUnstable_NativeTraverseFunc>,
    /// Release the state (may be `None`).
    pub clear: Option<PyUnstable_NativeClearFunc>,
    /// Size of the state: zero-filled, 16-byte aligned.
    pub state_size: Py_ssize_t,
    /// If positive, the offset in the state of the C `int` line slot.
    pub lineno_offset: Py_ssize_t,
    /// `PyUnstable_NATIVE_*` flags ([`PyUnstable_NATIVE_KEEP_HANDLED_EXCEPTION`]),
    /// or 0.  Added after the first version of the structure: a definition
    /// whose `size` stops before it has none.
    pub flags: c_uint,
}

/// A flag of [`PyUnstable_NativeFrameDef::flags`]: after a step that
/// received an exception, the frame keeps the handled exception the step
/// left (`PyErr_SetHandledException`) instead of getting back the one it
/// had before the call; for steps generated from code whose `except`
/// blocks go on across an await or a yield.
pub const PyUnstable_NATIVE_KEEP_HANDLED_EXCEPTION: c_uint = 0x1;

/// `PyUnstable_Code_NewNative(filename, name, qualname, firstlineno,
/// nlines, flags, argnames)`.
pub type PyUnstable_Code_NewNative_t = unsafe extern "C" fn(
    filename: *mut PyObject,
    name: *mut PyObject,
    qualname: *mut PyObject,
    firstlineno: c_int,
    nlines: c_int,
    flags: c_int,
    argnames: *mut PyObject,
) -> *mut PyCodeObject;

/// `PyUnstable_NativeFunction_New(def, code, globals)`.
pub type PyUnstable_NativeFunction_New_t = unsafe extern "C" fn(
    def: *const PyUnstable_NativeFrameDef,
    code: *mut PyObject,
    globals: *mut PyObject,
) -> *mut PyObject;

/// `PyUnstable_Coro_NewNative`, `PyUnstable_Gen_NewNative` and
/// `PyUnstable_AsyncGen_NewNative(func, name, qualname, state)`: `*state`
/// (when `state` is not null) receives the new object's native state, null
/// on failure.
pub type PyUnstable_NewNative_t = unsafe extern "C" fn(
    func: *mut PyObject,
    name: *mut PyObject,
    qualname: *mut PyObject,
    state: *mut *mut c_void,
) -> *mut PyObject;

/// `PyUnstable_Gen_GetNativeState(gen, def)`.
pub type PyUnstable_Gen_GetNativeState_t =
    unsafe extern "C" fn(gen_: *mut PyObject, def: *const PyUnstable_NativeFrameDef) -> *mut c_void;

/// `PyUnstable_Gen_SetNativeLine(gen, lineno)`.
pub type PyUnstable_Gen_SetNativeLine_t =
    unsafe extern "C" fn(gen_: *mut PyObject, lineno: c_int) -> c_int;

/// The functions of the native frames API, found in the running
/// interpreter (see [`api`]).  Each field is the C function of its name.
#[derive(Debug)]
#[non_exhaustive]
pub struct NativeFramesApi {
    /// The API version of the functions: [`API_VERSION`].
    pub version: u32,
    /// `PyUnstable_Code_NewNative`.
    pub PyUnstable_Code_NewNative: PyUnstable_Code_NewNative_t,
    /// `PyUnstable_NativeFunction_New`.
    pub PyUnstable_NativeFunction_New: PyUnstable_NativeFunction_New_t,
    /// `PyUnstable_Coro_NewNative`.
    pub PyUnstable_Coro_NewNative: PyUnstable_NewNative_t,
    /// `PyUnstable_Gen_NewNative`.
    pub PyUnstable_Gen_NewNative: PyUnstable_NewNative_t,
    /// `PyUnstable_AsyncGen_NewNative`.
    pub PyUnstable_AsyncGen_NewNative: PyUnstable_NewNative_t,
    /// `PyUnstable_Gen_GetNativeState`.
    pub PyUnstable_Gen_GetNativeState: PyUnstable_Gen_GetNativeState_t,
    /// `PyUnstable_Gen_SetNativeLine`.
    pub PyUnstable_Gen_SetNativeLine: PyUnstable_Gen_SetNativeLine_t,
}

/// The native frames API of the running interpreter, or `None` if it has
/// none (see the [crate docs](crate)).  Resolved on the first call (the
/// symbols of the interpreter, then `PYCORO_NATIVE_FRAMES`), then cached
/// for the process; cheap afterwards.
#[inline]
pub fn api() -> Option<&'static NativeFramesApi> {
    static API: OnceLock<Option<NativeFramesApi>> = OnceLock::new();
    API.get_or_init(resolve).as_ref()
}

/// Whether the environment asks for the API to be reported absent.
fn disabled_by_env() -> bool {
    std::env::var_os("PYCORO_NATIVE_FRAMES").is_some_and(|v| v == "0")
}

#[cfg(all(Py_HAVE_NATIVE_FRAMES, unix))]
fn resolve() -> Option<NativeFramesApi> {
    if disabled_by_env() {
        return None;
    }
    /// `dlsym(RTLD_DEFAULT, name)`, transmuted to the function type `T`.
    ///
    /// # Safety
    /// `T` is the `unsafe extern "C" fn` type of the C function `name`.
    unsafe fn find<T: Copy>(name: &std::ffi::CStr) -> Option<T> {
        const { assert!(size_of::<T>() == size_of::<*mut c_void>()) };
        // SAFETY: `dlsym` is thread-safe and takes a NUL-terminated name;
        // RTLD_DEFAULT searches the global scope (the interpreter and the
        // libraries loaded with it).
        let ptr = unsafe { sys::dlsym(sys::RTLD_DEFAULT, name.as_ptr()) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: a non-null symbol of that name is the C function, whose
        // type `T` is (the caller's contract); function and data pointers
        // have one size on the platforms with dlsym (asserted above).
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&ptr) })
    }
    // SAFETY: each name is paired with the type of its declaration in the
    // patched headers (checked against them by the layout tests for the
    // struct and constants; the signatures are copied from the headers).
    unsafe {
        Some(NativeFramesApi {
            version: API_VERSION,
            PyUnstable_Code_NewNative: find(c"PyUnstable_Code_NewNative")?,
            PyUnstable_NativeFunction_New: find(c"PyUnstable_NativeFunction_New")?,
            PyUnstable_Coro_NewNative: find(c"PyUnstable_Coro_NewNative")?,
            PyUnstable_Gen_NewNative: find(c"PyUnstable_Gen_NewNative")?,
            PyUnstable_AsyncGen_NewNative: find(c"PyUnstable_AsyncGen_NewNative")?,
            PyUnstable_Gen_GetNativeState: find(c"PyUnstable_Gen_GetNativeState")?,
            PyUnstable_Gen_SetNativeLine: find(c"PyUnstable_Gen_SetNativeLine")?,
        })
    }
}

#[cfg(not(all(Py_HAVE_NATIVE_FRAMES, unix)))]
fn resolve() -> Option<NativeFramesApi> {
    let _ = disabled_by_env;
    None
}

#[cfg(all(Py_HAVE_NATIVE_FRAMES, unix))]
mod sys {
    use std::ffi::{c_char, c_void};

    /// `RTLD_DEFAULT`: `((void *) 0)` in glibc, musl and bionic.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();
    /// `RTLD_DEFAULT`: `((void *) -2)` on the BSDs and Apple platforms.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) const RTLD_DEFAULT: *mut c_void = -2isize as *mut c_void;

    unsafe extern "C" {
        /// `dlsym(3)`, in the C library (glibc >= 2.34, musl, macOS, the
        /// BSDs) or in `libdl` that CPython links on older glibc.
        pub(super) fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
}

/// The layout of the definition and the constants, checked against the
/// C compiler's view of the headers (`c/layout.c`).
#[cfg(all(test, Py_HAVE_NATIVE_FRAMES))]
mod layout {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    unsafe extern "C" {
        fn pycoro_ffi_layout(what: c_int) -> i64;
        fn pycoro_ffi_constant(what: c_int) -> i64;
    }

    fn c_layout(what: c_int) -> usize {
        // SAFETY: a pure C function of an int.
        usize::try_from(unsafe { pycoro_ffi_layout(what) }).expect("unknown layout query")
    }

    #[test]
    fn the_frame_definition_has_the_c_layout() {
        type D = PyUnstable_NativeFrameDef;
        let rust = [
            size_of::<D>(),
            align_of::<D>(),
            offset_of!(D, size),
            offset_of!(D, step),
            offset_of!(D, traverse),
            offset_of!(D, clear),
            offset_of!(D, state_size),
            offset_of!(D, lineno_offset),
            offset_of!(D, flags),
            size_of::<PyUnstable_NativeStep>(),
        ];
        let c: Vec<usize> = (0..rust.len() as c_int).map(c_layout).collect();
        assert_eq!(rust.as_slice(), c.as_slice());
    }

    #[test]
    fn the_constants_have_the_c_values() {
        let rust = [
            i64::from(PyUnstable_NATIVE_ERROR),
            i64::from(PyUnstable_NATIVE_RETURN),
            i64::from(PyUnstable_NATIVE_YIELD),
            i64::from(PyUnstable_NATIVE_AWAIT),
            i64::from(PyUnstable_NATIVE_AWAIT_ITER),
            i64::from(CO_NATIVE),
            i64::from(API_VERSION),
            i64::from(CO_GENERATOR),
            i64::from(CO_COROUTINE),
            i64::from(CO_ASYNC_GENERATOR),
            i64::from(PyUnstable_NATIVE_KEEP_HANDLED_EXCEPTION),
        ];
        // SAFETY: a pure C function of an int.
        let c: Vec<i64> = (0..rust.len() as c_int)
            .map(|i| unsafe { pycoro_ffi_constant(i) })
            .collect();
        assert_eq!(rust.as_slice(), c.as_slice());
        assert_eq!(HEADER_VERSION, Some(API_VERSION));
    }
}
