//! The thin unsafe layer: every `unsafe` block of the crate lives here, each
//! with a `// SAFETY:` comment.  Above it ([`crate::coroutine`],
//! [`crate::waker`], [`crate::runtime`], [`crate::panic`]) the code is safe
//! Rust working with pyo3's GIL-bound types.
//!
//! What this layer does:
//! - creates the code object, function and coroutine of a native frame;
//! - places a Rust value (a [`NativeBody`]) in the coroutine's native state
//!   and hands CPython the three callbacks of a [`ffi::PyNativeFrameDef`]
//!   (`step`, `traverse`, `clear`), which translate between the C contract
//!   and the safe [`NativeBody`] trait, and never let a panic unwind into C.

use std::ffi::{c_int, c_void};
use std::mem::{MaybeUninit, align_of, size_of};
use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::ffi;

/// What a native body asks its frame to do after a step (the safe mirror of
/// [`ffi::PyNativeStep`]).
pub enum Step {
    /// The body finished with this value (`StopIteration.value`).
    Return(Py<PyAny>),
    /// Suspend, yielding this value to whoever drives the coroutine.
    Yield(Py<PyAny>),
    /// Await this awaitable as an `await` expression would, then step again
    /// with its result or its exception.
    Await(Py<PyAny>),
    /// Raise this exception as `raise exc` does in Python: it is chained
    /// to the exception being handled, if any (`__context__`).
    Raise(PyErr),
    /// Let this exception, which came into the body (thrown in, or raised
    /// by an awaited object), propagate unchanged.
    Error(PyErr),
}

/// A Rust value that runs as the body of a native frame.
///
/// [`frame_def`] turns an implementation into the C callbacks; the value is
/// stored inline in the coroutine (see [`new_native_coroutine`]) and dropped by the
/// frame's `clear` callback.
pub trait NativeBody: Send + 'static {
    /// Advance the body.  `sent` is the value sent in (`None` on the first
    /// step, or the result of an awaitable returned with [`Step::Await`]),
    /// or the exception thrown in / raised by that awaitable.
    fn step(&mut self, py: Python<'_>, coro: &Bound<'_, PyAny>, sent: PyResult<Py<PyAny>>) -> Step;

    /// Visit the Python objects this body owns (cyclic GC).  Must not call
    /// into Python.
    fn traverse(&self, visit: &Visit<'_>) -> Result<(), c_int>;

    /// Called with the GIL held when the exception raised by a panic in
    /// `drop` (during `clear`) cannot be propagated; the default reports it
    /// through `sys.unraisablehook`.
    fn unraisable(py: Python<'_>, err: PyErr) {
        err.write_unraisable(py, None);
    }
}

/// The native state as laid out in the coroutine: zero-filled by CPython, so
/// `init == false` until [`init_state`] writes the body.
#[repr(C)]
struct Slot<B> {
    init: bool,
    body: MaybeUninit<B>,
}

/// The GC visitor passed to [`NativeBody::traverse`].
pub struct Visit<'a> {
    visit: ffi::visitproc,
    arg: *mut c_void,
    _marker: std::marker::PhantomData<&'a ()>,
}

impl Visit<'_> {
    /// Visit one owned reference; `Err` carries the visitor's non-zero
    /// result, which must be returned at once (as `Py_VISIT` does).
    pub fn call(&self, obj: &Py<PyAny>) -> Result<(), c_int> {
        // SAFETY: `visit`/`arg` are the pair CPython passed to our traverse
        // callback, which is still running (the lifetime ties `self` to
        // it); `obj` is a live object owned by the body being traversed.
        let r = unsafe { (self.visit)(obj.as_ptr(), self.arg) };
        if r == 0 { Ok(()) } else { Err(r) }
    }
}

/// The frame definition for bodies of type `B`; keep it in a `static`
/// (CPython requires it to outlive every coroutine made from it).
pub const fn frame_def<B: NativeBody>() -> ffi::PyNativeFrameDef {
    assert!(
        align_of::<Slot<B>>() <= 16,
        "native state is only 16-byte aligned"
    );
    ffi::PyNativeFrameDef {
        step: Some(step_trampoline::<B>),
        traverse: Some(traverse_trampoline::<B>),
        clear: Some(clear_trampoline::<B>),
        state_size: size_of::<Slot<B>>() as ffi::Py_ssize_t,
    }
}

/// What a native frame runs as: the object its constructor makes and the
/// kind of its code object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `PyCoro_NewNative`, `CO_COROUTINE`: `types.CoroutineType`.
    Coroutine,
    /// `PyGen_NewNative`, `CO_GENERATOR`: `types.GeneratorType`.
    Generator,
    /// `PyAsyncGen_NewNative`, `CO_ASYNC_GENERATOR`:
    /// `types.AsyncGeneratorType`.
    AsyncGenerator,
}

impl Kind {
    fn code_flag(self) -> c_int {
        match self {
            Kind::Coroutine => ffi::CO_COROUTINE,
            Kind::Generator => ffi::CO_GENERATOR,
            Kind::AsyncGenerator => ffi::CO_ASYNC_GENERATOR,
        }
    }
}

/// `PyCode_NewNative(filename, name, qualname, firstlineno, nlines, CO_COROUTINE)`.
pub fn new_coroutine_code<'py>(
    py: Python<'py>,
    filename: &str,
    name: &str,
    qualname: &str,
    firstlineno: u32,
    nlines: u32,
) -> PyResult<Bound<'py, PyAny>> {
    new_native_code(
        py,
        filename,
        name,
        qualname,
        firstlineno,
        nlines,
        Kind::Coroutine,
    )
}

/// `PyCode_NewNative(filename, name, qualname, firstlineno, nlines, kind)`.
pub fn new_native_code<'py>(
    py: Python<'py>,
    filename: &str,
    name: &str,
    qualname: &str,
    firstlineno: u32,
    nlines: u32,
    kind: Kind,
) -> PyResult<Bound<'py, PyAny>> {
    let filename = PyString::new(py, filename);
    let name = PyString::new(py, name);
    let qualname = PyString::new(py, qualname);
    let firstlineno = c_int::try_from(firstlineno).unwrap_or(c_int::MAX);
    let nlines = c_int::try_from(nlines.max(1)).unwrap_or(c_int::MAX);
    // SAFETY: GIL held (`py`); the three strings are live `str` objects
    // borrowed for the call; the result is a new reference or NULL with an
    // exception set, which `from_owned_ptr_or_err` turns into `Err`.
    unsafe {
        let code = ffi::PyCode_NewNative(
            filename.as_ptr(),
            name.as_ptr(),
            qualname.as_ptr(),
            firstlineno,
            nlines,
            kind.code_flag(),
        );
        Bound::from_owned_ptr_or_err(py, code.cast::<ffi::PyObject>())
    }
}

/// `PyFunction_New(code, globals)`.
pub fn new_function<'py>(
    code: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = code.py();
    // SAFETY: GIL held; both arguments are live borrowed objects;
    // PyFunction_New returns a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyFunction_New(code.as_ptr(), globals.as_ptr()))
    }
}

/// `PyCoro_NewNative(def, func, NULL, NULL)`, then the body written into the
/// zero-filled state.  If anything fails the coroutine is released with its
/// state still zero-filled, which `clear` treats as empty.
pub fn new_native_coroutine<'py, B: NativeBody>(
    func: &Bound<'py, PyAny>,
    def: &'static ffi::PyNativeFrameDef,
    body: B,
) -> PyResult<Bound<'py, PyAny>> {
    new_native_object(func, def, body, Kind::Coroutine)
}

/// `PyCoro_NewNative`, `PyGen_NewNative` or `PyAsyncGen_NewNative(def,
/// func, NULL, NULL)` as `kind` says (the code of `func` must be of that
/// kind, or CPython raises `TypeError`), then the body written into the
/// zero-filled state, as [`new_native_coroutine`] does.
pub fn new_native_object<'py, B: NativeBody>(
    func: &Bound<'py, PyAny>,
    def: &'static ffi::PyNativeFrameDef,
    body: B,
    kind: Kind,
) -> PyResult<Bound<'py, PyAny>> {
    let py = func.py();
    if def.state_size < size_of::<Slot<B>>() as ffi::Py_ssize_t {
        return Err(PySystemError::new_err(
            "native frame state too small for its body",
        ));
    }
    let constructor = match kind {
        Kind::Coroutine => ffi::PyCoro_NewNative,
        Kind::Generator => ffi::PyGen_NewNative,
        Kind::AsyncGenerator => ffi::PyAsyncGen_NewNative,
    };
    // SAFETY: GIL held; `def` is 'static (outlives the object, as CPython
    // requires); `func` is live; NULL name/qualname are allowed.  The three
    // constructors share one signature and contract; the result is a new
    // reference or NULL with an exception set.
    let coro = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            constructor(
                def,
                func.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
        )?
    };
    // SAFETY: GIL held; `coro` is live.  Returns NULL with TypeError set if
    // `coro` has no native frame.
    let state = unsafe { ffi::PyGen_GetNativeState(coro.as_ptr()) };
    if state.is_null() {
        return Err(PyErr::fetch(py));
    }
    if (state as usize) % align_of::<Slot<B>>() != 0 {
        return Err(PySystemError::new_err("native frame state is misaligned"));
    }
    let slot = state.cast::<Slot<B>>();
    // SAFETY: CPython guarantees `state` points to `def.state_size` (checked
    // >= size_of::<Slot<B>>() above) zero-filled bytes, 16-byte aligned
    // (checked against Slot's alignment), owned by `coro`, which nothing
    // else has seen yet: writing the slot cannot race or overwrite a body.
    unsafe {
        std::ptr::write(
            slot,
            Slot {
                init: true,
                body: MaybeUninit::new(body),
            },
        );
    }
    Ok(coro)
}

/// `PyGen_SetNativeLine(coro, line)`.
pub fn set_native_line(coro: &Bound<'_, PyAny>, line: u32) -> PyResult<()> {
    let line = c_int::try_from(line).unwrap_or(c_int::MAX);
    // SAFETY: GIL held (Bound); `coro` is live; returns -1 with an
    // exception set on error.
    let r = unsafe { ffi::PyGen_SetNativeLine(coro.as_ptr(), line) };
    if r < 0 {
        Err(PyErr::fetch(coro.py()))
    } else {
        Ok(())
    }
}

/// Take the raised exception (if any) as a `PyErr`, without PyO3's special
/// treatment of its own `PanicException` (which would resume the panic).
pub fn take_raised(py: Python<'_>) -> Option<PyErr> {
    // SAFETY: GIL held; returns a new reference to the exception (clearing
    // the indicator) or NULL if none is set.
    let exc = unsafe { Bound::from_owned_ptr_or_opt(py, ffi::PyErr_GetRaisedException()) }?;
    Some(PyErr::from_value(exc))
}

/// Last resort when even building the error of a panic panicked: set a
/// `SystemError` through the C API, which cannot unwind.
fn set_system_error() {
    // SAFETY: called with the GIL held (inside a CPython callback);
    // the message is a NUL-terminated static string.
    unsafe {
        ffi::PyErr_SetString(
            ffi::PyExc_SystemError,
            c"native coroutine: panic while reporting a panic".as_ptr(),
        );
    }
}

fn step_inner<B: NativeBody>(
    py: Python<'_>,
    slot: &mut Slot<B>,
    coro: &Bound<'_, PyAny>,
    sent: PyResult<Py<PyAny>>,
    result: &mut *mut ffi::PyObject,
) -> ffi::PyNativeStep {
    let step = if slot.init {
        // SAFETY: `init` is true only after `new_native_coroutine` wrote a
        // valid body; it is reset before the body is dropped.
        let body = unsafe { slot.body.assume_init_mut() };
        match catch_unwind(AssertUnwindSafe(|| body.step(py, coro, sent))) {
            Ok(step) => step,
            Err(payload) => Step::Raise(crate::panic::panic_to_pyerr(py, payload)),
        }
    } else {
        Step::Raise(PySystemError::new_err("native coroutine has no body"))
    };
    match step {
        Step::Return(v) => {
            *result = v.into_ptr();
            ffi::PyNativeStep::PyNative_RETURN
        }
        Step::Yield(v) => {
            *result = v.into_ptr();
            ffi::PyNativeStep::PyNative_YIELD
        }
        Step::Await(v) => {
            *result = v.into_ptr();
            ffi::PyNativeStep::PyNative_AWAIT
        }
        Step::Raise(e) => {
            raise(py, e);
            ffi::PyNativeStep::PyNative_ERROR
        }
        Step::Error(e) => {
            e.restore(py);
            ffi::PyNativeStep::PyNative_ERROR
        }
    }
}

/// `raise exc`: `PyErr_SetObject` does the implicit chaining (and keeps
/// the exception's traceback), where `PyErr_SetRaisedException` (pyo3's
/// `restore`) would not.
fn raise(py: Python<'_>, err: PyErr) {
    let value = err.into_value(py);
    let ty = value.bind(py).get_type();
    // SAFETY: GIL held; `ty` is the (exception) type of `value`, both live
    // for the call; PyErr_SetObject takes its own references.
    unsafe { ffi::PyErr_SetObject(ty.as_ptr(), value.as_ptr()) }
}

/// Run `f` counted as attached by pyo3 (the thread holds the GIL already,
/// CPython called us): a `Py` dropped inside is released at once.  With
/// `Python::assume_attached` alone pyo3 defers such drops to its pool until
/// the next pyo3 call, which delays `__del__`, finalizers and the "never
/// awaited" warning of objects the body releases (e.g. a child coroutine
/// held by a future dropped by `clear`).  While the interpreter finalizes
/// pyo3 refuses to attach; then `f` runs with the bare token.
fn with_attached<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
    let mut f = Some(f);
    let done = Python::try_attach(|py| (f.take().expect("called once"))(py));
    match (done, f) {
        (Some(r), _) => r,
        // SAFETY: CPython called us with the GIL held.
        (None, Some(f)) => f(unsafe { Python::assume_attached() }),
        (None, None) => unreachable!("try_attach ran the closure but returned None"),
    }
}

unsafe extern "C" fn step_trampoline<B: NativeBody>(
    gen_: *mut ffi::PyObject,
    state: *mut c_void,
    sent: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PyNativeStep {
    // SAFETY: the contract of `step_attached` is this callback's own.
    with_attached(|py| unsafe { step_attached::<B>(py, gen_, state, sent, result) })
}

/// The step callback, once attached.
///
/// # Safety
/// Called by CPython as the `step` of a frame made by `frame_def::<B>()`.
unsafe fn step_attached<B: NativeBody>(
    py: Python<'_>,
    gen_: *mut ffi::PyObject,
    state: *mut c_void,
    sent: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PyNativeStep {
    // SAFETY: `gen_` is the live coroutine being resumed, borrowed for the
    // duration of the call.
    let coro = unsafe { Bound::from_borrowed_ptr(py, gen_) };
    let sent = if sent.is_null() {
        Err(take_raised(py).unwrap_or_else(|| {
            PySystemError::new_err("native step called with NULL but no exception set")
        }))
    } else {
        // SAFETY: `sent` is a live borrowed reference; we take our own.
        Ok(unsafe { Bound::from_borrowed_ptr(py, sent) }.unbind())
    };
    // SAFETY: `state` is this coroutine's native state, created for bodies
    // of type B by `frame_def::<B>()` (the callbacks and the size come from
    // the same `B`), zero-filled or written by `new_native_coroutine`.
    // CPython does not run step re-entrantly on one coroutine (cr_running),
    // so this is the only reference.
    let slot = unsafe { &mut *state.cast::<Slot<B>>() };
    // SAFETY: `result` is a valid out-pointer supplied by CPython.
    let result = unsafe { &mut *result };
    match catch_unwind(AssertUnwindSafe(|| {
        step_inner(py, slot, &coro, sent, result)
    })) {
        Ok(kind) => kind,
        Err(payload) => {
            // Panicked while converting the outcome: report it, but never
            // unwind into C.
            let fallback = catch_unwind(AssertUnwindSafe(|| {
                crate::panic::panic_to_pyerr(py, payload).restore(py)
            }));
            if fallback.is_err() {
                set_system_error();
            }
            ffi::PyNativeStep::PyNative_ERROR
        }
    }
}

unsafe extern "C" fn traverse_trampoline<B: NativeBody>(
    state: *mut c_void,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: as in `step_trampoline`; the GC holds the GIL and only reads
    // the state, and `init` tells whether a body is there.
    let slot = unsafe { &*state.cast::<Slot<B>>() };
    if !slot.init {
        return 0;
    }
    // SAFETY: `init` is true, so the body is valid.
    let body = unsafe { slot.body.assume_init_ref() };
    let visit = Visit {
        visit,
        arg,
        _marker: std::marker::PhantomData,
    };
    match catch_unwind(AssertUnwindSafe(|| body.traverse(&visit))) {
        Ok(Ok(())) => 0,
        Ok(Err(r)) => r,
        // A panicking traverse visits nothing more; the GC cannot take an
        // exception here.
        Err(_) => 0,
    }
}

unsafe extern "C" fn clear_trampoline<B: NativeBody>(state: *mut c_void) {
    // SAFETY: the contract of `clear_attached` is this callback's own.
    with_attached(|py| unsafe { clear_attached::<B>(py, state) })
}

/// The clear callback, once attached.
///
/// # Safety
/// CPython calls clear with the GIL held, exactly once per coroutine,
/// possibly on a zero-filled state.
unsafe fn clear_attached<B: NativeBody>(py: Python<'_>, state: *mut c_void) {
    // SAFETY: as in `step_trampoline`.
    let slot = unsafe { &mut *state.cast::<Slot<B>>() };
    if !slot.init {
        return;
    }
    slot.init = false;
    // SAFETY: `init` was true, so the body is valid; it is marked gone
    // before the drop, so even a panicking drop leaves no second drop.
    let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { slot.body.assume_init_drop() }));
    if let Err(payload) = dropped {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // Keep an exception that is being propagated (clear may run
            // while one is set, e.g. after an ERROR step).
            let pending = take_raised(py);
            B::unraisable(py, crate::panic::panic_to_pyerr(py, payload));
            if let Some(e) = pending {
                e.restore(py);
            }
        }));
    }
}

/// Report `err` as a type error if `obj` is not a native coroutine; used by
/// tests and debugging helpers.
pub fn check_native(obj: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: GIL held; `obj` is live; NULL return sets TypeError.
    let state = unsafe { ffi::PyGen_GetNativeState(obj.as_ptr()) };
    if state.is_null() {
        return Err(take_raised(obj.py())
            .unwrap_or_else(|| PyTypeError::new_err("object has no native frame")));
    }
    Ok(())
}
