//! The thin unsafe layer: every `unsafe` block of the crate lives here, each
//! with a `// SAFETY:` comment.  It is private to the crate (nothing here is
//! public API): a body type picks its own frame definition
//! ([`FrameDef::<B>::DEF`](FrameDef), derived from `B`), so no caller can
//! pair one body type's definition with another's value.  Above it ([`crate::coroutine`],
//! [`crate::waker`], [`crate::runtime`], [`crate::panic`]) the code is safe
//! Rust working with pyo3's GIL-bound types.
//!
//! What this layer does:
//! - creates the code object, native function and coroutine of a native
//!   frame (one native function per code object and body type: the
//!   definition it carries is derived from the body type, see
//!   [`FunctionCache`]);
//! - places a Rust value (a [`NativeBody`]), pinned, and the Python objects
//!   it holds in the coroutine's native state, beside the frame's line
//!   slot, and hands CPython the three callbacks of a
//!   [`ffi::PyUnstable_NativeFrameDef`] (`step`, `traverse`, `clear`),
//!   which translate between the C contract and the safe [`NativeBody`]
//!   trait, and never let a panic unwind into C;
//! - the few tools the safe layers need for a cheap step: a waker borrowed
//!   from the state ([`with_lazy_waker`]), a thread-local reference to the
//!   running step ([`ScopedRef`]), the projection of a pinned body
//!   ([`PinPair`]).
//!
//! # Cost
//!
//! The step is the hot path of every `await` (benches/analysis.md): it
//! borrows what CPython passes (no reference counting), counts the thread
//! as attached through pyo3's public `Python::attach_unchecked` (see
//! "Counting the thread as attached" below), and needs no heap allocation:
//! the body lives inline in the state.  The C function of a
//! [`crate::function`] does not count the thread at all (it drops no
//! `Py<T>`: see [`fastcall_trampoline`]).  The frame's line is a plain store into the line
//! slot of the state (`lineno_offset`), which CPython reads only when it
//! needs the line.

use std::any::TypeId;
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit, align_of, offset_of, size_of};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{RawWaker, RawWakerVTable, Waker};

use std::ffi::CStr;

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyString, PyTuple};

use crate::function::CoroutineFn;

use crate::ffi;
use crate::waker::LazyWaker;

/// What a native body asks its frame to do after a step (the safe mirror of
/// [`ffi::PyUnstable_NativeStep`]).
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

/// What a step receives: the value sent in (borrowed for the step) or the
/// exception thrown in / raised by the awaited object.
pub type Sent<'a, 'py> = PyResult<Borrowed<'a, 'py, PyAny>>;

/// A Rust value that runs as the body of a native frame.
///
/// [`FrameDef`] turns an implementation into the C callbacks; the value is stored inline in the object (see
/// [`new_native_object`]), never moves while it lives there (hence
/// `Pin`), and is dropped by the frame's `clear` callback.
pub trait NativeBody: Send + 'static {
    /// Advance the body.  `sent` is the value sent in (`None` on the first
    /// step, or the result of an awaitable returned with [`Step::Await`]),
    /// or the exception thrown in / raised by that awaitable.
    fn step<'py>(self: Pin<&mut Self>, frame: &Frame<'_, 'py>, sent: Sent<'_, 'py>) -> Step;

    /// Called with the GIL held when the exception raised by a panic in
    /// `drop` (during `clear`) cannot be propagated; the default reports it
    /// through `sys.unraisablehook`.
    fn unraisable(py: Python<'_>, err: PyErr) {
        err.write_unraisable(py, None);
    }
}

/// The frame whose step runs: what a [`NativeBody::step`] can reach besides
/// its own state.
pub struct Frame<'a, 'py> {
    gen_: Borrowed<'a, 'py, PyAny>,
    line: &'a Cell<c_int>,
    held: &'a [Py<PyAny>],
}

impl<'a, 'py> Frame<'a, 'py> {
    /// The GIL token of the step.
    pub fn py(&self) -> Python<'py> {
        self.gen_.py()
    }

    /// Set the line the running frame reports: a store into its line slot
    /// (CPython clamps it to the code's span when it reads it).
    #[inline]
    pub fn set_line(&self, line: u32) {
        self.line.set(c_line(line));
    }
}

/// A line as the C `int` of the line slot.
#[inline]
fn c_line(line: u32) -> c_int {
    c_int::try_from(line).unwrap_or(c_int::MAX)
}

/// The native state as laid out in the object: zero-filled by CPython, so
/// `init == false` until [`new_native_object`] writes `held` and `body`.
/// The GC's `traverse` reads `init` and `held` only, never `body`, which a
/// running step borrows mutably.  `line` is the frame's line slot (the
/// definition's `lineno_offset`, never 0 since `init` comes first): the
/// step stores into it, CPython reads it (0 means "the first line").
#[repr(C)]
struct Slot<B> {
    init: bool,
    line: Cell<c_int>,
    held: MaybeUninit<Held>,
    body: MaybeUninit<B>,
}

/// The objects a state holds: one pointer, `None` for none (the usual
/// case: no allocation), rather than a `Vec` (three words in every state).
type Held = Option<Box<Vec<Py<PyAny>>>>;

/// The held objects as a slice.
#[inline]
fn held_slice(held: &Held) -> &[Py<PyAny>] {
    held.as_deref().map_or(&[], Vec::as_slice)
}

/// The frame definition of bodies of type `B`, as an associated constant
/// derived from `B` alone: the callbacks and the state size all come from
/// the same `B`, and [`new_native_object`] takes no definition, only a
/// body, whose type picks [`FrameDef::<B>::DEF`](FrameDef::DEF).
/// `&FrameDef::<B>::DEF` is a `&'static` (constant promotion), so generic
/// code needs no `static` per type.  A body aligned to more than 16 bytes
/// gets an invalid definition (`state_size` -1), which
/// [`new_native_object`] and CPython refuse with `SystemError`.
pub(crate) struct FrameDef<B>(PhantomData<B>);

impl<B: NativeBody> FrameDef<B> {
    /// See [`FrameDef`].
    const DEF: ffi::PyUnstable_NativeFrameDef = ffi::PyUnstable_NativeFrameDef {
        size: size_of::<ffi::PyUnstable_NativeFrameDef>() as ffi::Py_ssize_t,
        step: Some(step_trampoline::<B>),
        traverse: Some(traverse_trampoline::<B>),
        clear: Some(clear_trampoline::<B>),
        state_size: if Self::FITS {
            size_of::<Slot<B>>() as ffi::Py_ssize_t
        } else {
            -1
        },
        lineno_offset: offset_of!(Slot<B>, line) as ffi::Py_ssize_t,
        // A Rust future gets a thrown exception as a `PyErr` value: it has
        // no `except` block that could go on across an await.
        flags: 0,
    };

    /// Whether bodies of type `B` fit the native state's alignment.
    pub(crate) const FITS: bool = align_of::<Slot<B>>() <= 16;

    /// The definition, with the `'static` lifetime CPython requires.
    #[inline(always)]
    fn def() -> &'static ffi::PyUnstable_NativeFrameDef {
        &Self::DEF
    }
}

/// What a native frame runs as: the object its constructor makes and the
/// kind of its code object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `PyUnstable_Coro_NewNative`, `CO_COROUTINE`: `types.CoroutineType`.
    Coroutine,
    /// `PyUnstable_Gen_NewNative`, `CO_GENERATOR`: `types.GeneratorType`.
    Generator,
    /// `PyUnstable_AsyncGen_NewNative`, `CO_ASYNC_GENERATOR`:
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

/// `PyUnstable_Code_NewNative(filename, name, qualname, firstlineno, nlines,
/// flags, NULL)`, with the code flag of `kind`: the code object of a native
/// frame, without arguments.
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
    let firstlineno = c_line(firstlineno);
    let nlines = c_line(nlines.max(1));
    // SAFETY: GIL held (`py`); the three strings are live `str` objects
    // borrowed for the call; NULL argument names are allowed (none); the
    // result is a new reference or NULL with an exception set, which
    // `from_owned_ptr_or_err` turns into `Err`.
    unsafe {
        let code = (ffi::api()?.PyUnstable_Code_NewNative)(
            filename.as_ptr(),
            name.as_ptr(),
            qualname.as_ptr(),
            firstlineno,
            nlines,
            kind.code_flag(),
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, code.cast::<ffi::PyObject>())
    }
}

/// A native function (`PyUnstable_NativeFunction_New`) with the body type
/// and the definition it was made for.
struct NativeFunction {
    body: TypeId,
    def: &'static ffi::PyUnstable_NativeFrameDef,
    func: Py<PyAny>,
}

impl NativeFunction {
    /// `PyUnstable_NativeFunction_New(&FrameDef::<B>::DEF, code, globals)`.
    fn new<B: NativeBody>(code: &Bound<'_, PyAny>, globals: &Bound<'_, PyDict>) -> PyResult<Self> {
        let py = code.py();
        let def = FrameDef::<B>::def();
        // SAFETY: GIL held (Bound); `def` is 'static (it outlives every
        // object made from the function, as CPython requires); `code` and
        // `globals` are live objects borrowed for the call (CPython checks
        // that they are native code and a dict); the result is a new
        // reference or NULL with an exception set.
        let func = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (ffi::api()?.PyUnstable_NativeFunction_New)(def, code.as_ptr(), globals.as_ptr()),
            )?
        };
        Ok(NativeFunction {
            body: TypeId::of::<B>(),
            def,
            func: func.unbind(),
        })
    }
}

/// What a native function is made from: the code object (of the kind the
/// constructor needs) and the frame's globals.
pub(crate) type CodeAndGlobals<'py> = (Bound<'py, PyAny>, Bound<'py, PyDict>);

/// The native functions over one code object, made on first use and kept
/// for the process (sub-interpreters are not supported).  There is one
/// per body type, because each carries the frame definition derived from
/// its body type ([`FrameDef::<B>::DEF`](FrameDef)): a def is almost always
/// used with one body type, whose function is found with one comparison;
/// any other (a generic Rust function, a future boxed for its size) is
/// looked up in a short list.
pub(crate) struct FunctionCache {
    first: PyOnceLock<NativeFunction>,
    others: Mutex<Vec<NativeFunction>>,
}

impl FunctionCache {
    /// An empty cache (for a `static`).
    pub(crate) const fn new() -> Self {
        FunctionCache {
            first: PyOnceLock::new(),
            others: Mutex::new(Vec::new()),
        }
    }

    /// The function made for the first body type, if that is `B` (making
    /// it for `B` if there is none yet).
    #[inline(always)]
    fn first<'py, B: NativeBody>(
        &self,
        py: Python<'py>,
        code: &impl Fn() -> PyResult<CodeAndGlobals<'py>>,
    ) -> PyResult<Option<&NativeFunction>> {
        let first = self.first.get_or_try_init(py, || {
            let (code, globals) = code()?;
            NativeFunction::new::<B>(&code, &globals)
        })?;
        Ok((first.body == TypeId::of::<B>()).then_some(first))
    }

    /// The function of a body type other than the first.
    #[cold]
    fn other<'py, B: NativeBody>(
        &self,
        py: Python<'py>,
        code: &impl Fn() -> PyResult<CodeAndGlobals<'py>>,
    ) -> PyResult<(Bound<'py, PyAny>, &'static ffi::PyUnstable_NativeFrameDef)> {
        let id = TypeId::of::<B>();
        let find = |list: &[NativeFunction]| {
            list.iter()
                .find(|f| f.body == id)
                .map(|f| (f.func.bind(py).clone(), f.def))
        };
        let lock = || self.others.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = find(&lock()) {
            return Ok(found);
        }
        // Made without the lock held (it runs Python code).
        let (code, globals) = code()?;
        let made = NativeFunction::new::<B>(&code, &globals)?;
        let mut others = lock();
        // Another thread may have made one meanwhile: keep that one, so
        // that every object of a body type comes from one function (ours
        // is released after the lock).
        if let Some(found) = find(&others) {
            drop(others);
            return Ok(found);
        }
        let found = (made.func.bind(py).clone(), made.def);
        others.push(made);
        Ok(found)
    }
}

/// `PyUnstable_Coro_NewNative`, `PyUnstable_Gen_NewNative` or
/// `PyUnstable_AsyncGen_NewNative(func, NULL, NULL, &state)` as `kind` says, with
/// `func` the native function of `functions` for the body type `B` (made
/// from `code()` on first use; its code must be of that kind, or CPython
/// raises `TypeError`), then `held` (objects the state owns, visited by
/// the GC: see [`Frame::held`]) and the body written into the zero-filled
/// state.  The name and qualname are the code's.  If anything fails the
/// object is released with its state still zero-filled, which `clear`
/// treats as empty.
#[inline(always)]
pub(crate) fn new_native_object<'py, B: NativeBody>(
    py: Python<'py>,
    functions: &FunctionCache,
    code: impl Fn() -> PyResult<CodeAndGlobals<'py>>,
    body: B,
    held: Vec<Py<PyAny>>,
    kind: Kind,
) -> PyResult<Bound<'py, PyAny>> {
    if !FrameDef::<B>::FITS {
        return Err(PySystemError::new_err(
            "native frame state is only 16-byte aligned: box the body",
        ));
    }
    let made;
    let (func, def) = match functions.first::<B>(py, &code)? {
        Some(f) => (f.func.bind_borrowed(py), f.def),
        None => {
            made = functions.other::<B>(py, &code)?;
            (made.0.as_borrowed(), made.1)
        }
    };
    let (coro, slot) = alloc_native_object::<B>(py, func, def, kind)?;
    // A `Vec` that never allocated is forgotten, not dropped: its drop is
    // a call (about 20 instructions) that has nothing to release.
    let held: Held = if held.capacity() == 0 {
        std::mem::forget(held);
        None
    } else if held.is_empty() {
        None
    } else {
        Some(Box::new(held))
    };
    write_slot(slot, body, held);
    Ok(coro)
}

/// [`new_native_object`] for a caller that pyo3 does not count as
/// attached (its token is `Python::assume_attached`'s: see
/// [`fastcall_trampoline`]), without held objects: nothing here drops a
/// `Py<T>` (which pyo3 would then queue rather than release).  The body is
/// made by `make_body` only once the object exists, so a failure has no
/// body to drop; and the first call for a body type (which makes the code
/// object and the native function, running Python code) runs counted.
#[inline(always)]
pub(crate) fn new_native_object_uncounted<'py, B: NativeBody>(
    py: Python<'py>,
    functions: &FunctionCache,
    code: impl Fn() -> PyResult<CodeAndGlobals<'py>>,
    make_body: impl FnOnce() -> B,
    kind: Kind,
) -> PyResult<Bound<'py, PyAny>> {
    let first = functions
        .first
        .get(py)
        .filter(|f| f.body == TypeId::of::<B>() && FrameDef::<B>::FITS);
    let Some(first) = first else {
        // SAFETY: the GIL is held (the caller's token).
        return unsafe {
            attached(|_| new_native_object(py, functions, code, make_body(), Vec::new(), kind))
        };
    };
    let (coro, slot) = alloc_native_object::<B>(py, first.func.bind_borrowed(py), first.def, kind)?;
    write_slot(slot, make_body(), None);
    Ok(coro)
}

/// `PyUnstable_Coro_NewNative`, `PyUnstable_Gen_NewNative` or
/// `PyUnstable_AsyncGen_NewNative(func, NULL, NULL, &state)` as `kind`
/// says, and the zero-filled state of the new object (that of `def`,
/// `func`'s definition), for [`write_slot`].  Drops no `Py<T>`.
#[inline(always)]
fn alloc_native_object<'py, B: NativeBody>(
    py: Python<'py>,
    func: Borrowed<'_, 'py, PyAny>,
    def: &'static ffi::PyUnstable_NativeFrameDef,
    kind: Kind,
) -> PyResult<(Bound<'py, PyAny>, SlotPtr<B>)> {
    let api = ffi::api()?;
    let constructor = match kind {
        Kind::Coroutine => api.PyUnstable_Coro_NewNative,
        Kind::Generator => api.PyUnstable_Gen_NewNative,
        Kind::AsyncGenerator => api.PyUnstable_AsyncGen_NewNative,
    };
    let mut state: *mut c_void = std::ptr::null_mut();
    // SAFETY: GIL held; `func` is a live native function (it keeps its
    // 'static definition); NULL name/qualname are allowed (the code's);
    // `state` is a valid out-pointer for the call.  The three
    // constructors share one signature and contract; the result is a new
    // reference (and `state` the object's native state) or NULL with an
    // exception set.
    let coro = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            constructor(
                func.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut state,
            ),
        )?
    };
    // The constructor's state is `def`'s: `func` was made with it, for
    // `B` (what `PyUnstable_Gen_GetNativeState` checks, in debug builds).
    debug_assert!(native_state_with(api, &coro, def).is_ok_and(|s| s == state));
    if (state as usize) % align_of::<Slot<B>>() != 0 {
        return Err(PySystemError::new_err("native frame state is misaligned"));
    }
    Ok((coro, SlotPtr(state.cast::<Slot<B>>())))
}

/// The zero-filled state of an object [`alloc_native_object`] just made
/// for bodies of type `B` (private: only that function makes one, and
/// [`write_slot`] consumes it).
struct SlotPtr<B>(*mut Slot<B>);

/// Write `held` and the body into the state `slot` (once).
#[inline(always)]
fn write_slot<B: NativeBody>(slot: SlotPtr<B>, body: B, held: Held) {
    let slot = slot.0;
    // SAFETY: `slot` comes from `alloc_native_object` (a `SlotPtr` is made
    // nowhere else and is consumed here): it is the native state of a new
    // object made from the definition of `B` (the function was made for
    // `TypeId::of::<B>()`): CPython guarantees it points to
    // `def.state_size` (= size_of::<Slot<B>>(), as FITS holds)
    // zero-filled bytes, 16-byte aligned (checked against Slot's
    // alignment), owned by the object, which nothing else has seen yet:
    // writing the slot cannot race or overwrite a body.  Field by field,
    // so that the body is moved straight into place; `line` stays 0 (zero
    // bytes are a valid `Cell<c_int>`).
    unsafe {
        (&raw mut (*slot).held).write(MaybeUninit::new(held));
        (&raw mut (*slot).body).write(MaybeUninit::new(body));
        (&raw mut (*slot).init).write(true);
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
    body: Option<Pin<&mut B>>,
    frame: &Frame<'_, '_>,
    sent: Sent<'_, '_>,
    result: &mut *mut ffi::PyObject,
) -> ffi::PyUnstable_NativeStep {
    let py = frame.py();
    let step = match body {
        Some(body) => body.step(frame, sent),
        None => Step::Raise(PySystemError::new_err("native coroutine has no body")),
    };
    match step {
        Step::Return(v) => {
            *result = v.into_ptr();
            ffi::PyUnstable_NATIVE_RETURN
        }
        Step::Yield(v) => {
            *result = v.into_ptr();
            ffi::PyUnstable_NATIVE_YIELD
        }
        Step::Await(v) => {
            *result = v.into_ptr();
            ffi::PyUnstable_NATIVE_AWAIT
        }
        Step::Raise(e) => {
            raise(py, e);
            ffi::PyUnstable_NATIVE_ERROR
        }
        Step::Error(e) => {
            e.restore(py);
            ffi::PyUnstable_NATIVE_ERROR
        }
    }
}

/// `raise exc`: `PyErr_SetObject` does the implicit chaining (and keeps
/// the exception's traceback), where `PyErr_SetRaisedException` (pyo3's
/// `restore`) would not.
fn raise(py: Python<'_>, err: PyErr) {
    let value = err.into_value(py).into_bound(py);
    let ty = value.get_type();
    // SAFETY: GIL held; `ty` is the (exception) type of `value`, both live
    // for the call; PyErr_SetObject takes its own references.
    unsafe { ffi::PyErr_SetObject(ty.as_ptr(), value.as_ptr()) }
}

// Counting the thread as attached.
//
// CPython calls `step` and `clear` with the GIL held, but pyo3 counts a
// thread as attached only inside its own guards: a `Py` dropped outside
// them is not released but queued in pyo3's deferred-decref pool (until
// the next pyo3 call), which delays `__del__`, finalizers and the "never
// awaited" warning of objects a body releases.  So both callbacks run
// inside `Python::attach_unchecked` (public, semver-covered API: it is
// `Python::try_attach` without the checks whose answer a CPython callback
// already knows, about 30 instructions less).  When pyo3's count is zero
// (the usual case: CPython, not pyo3, called us) it calls
// `PyGILState_Ensure`, which finds this thread's state current and only
// bumps a counter, and `PyGILState_Release` after (about 180 instructions
// per callback in all, benches/analysis.md); when it is not (a step run by
// a `send` called from Rust), it only counts.
//
// While the interpreter finalizes (CPython still closes and frees
// coroutines then, e.g. those left in module globals) `Python::attach`
// would refuse, so the callbacks do not attach; nor could they during a
// pyo3 `__traverse__`, where CPython never steps or clears a frame.  The
// GIL is held all the same (CPython's contract for both callbacks), so the
// callback then runs with the token of
// `Python::assume_attached`: pyo3 queues what the body releases instead of
// releasing it (at shutdown: a leak, not a fault), and a `Python::attach`
// inside the body panics, which the step reports as `PanicException` like
// any panic.  Nothing unwinds into C: a panic that escapes even that (in
// pyo3's attach itself) sets `SystemError` (`step`) or is dropped
// (`clear`, which cannot report).

/// Run `f` counted as attached by pyo3 (see above).
///
/// # Safety
/// The thread holds the GIL (it is inside a CPython callback that
/// guarantees it).
#[inline(always)]
unsafe fn attached<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    // SAFETY: no precondition (a read of the runtime's finalizing flag).
    if unsafe { ffi::Py_IsFinalizing() } != 0 {
        // SAFETY: the GIL is held (the contract above); the token lives
        // for this call only.
        return f(unsafe { Python::assume_attached() });
    }
    // SAFETY: `Python::attach` would succeed here: the interpreter is
    // initialized and not finalizing (checked above; a CPython callback
    // runs only in a running interpreter), and CPython never steps or
    // clears a frame inside a pyo3 `__traverse__` (which cannot run
    // Python code).  This is `Python::try_attach` without the checks we
    // already know the answer to.
    unsafe { Python::attach_unchecked(f) }
}

/// The step of `FrameDef::<B>::DEF`.  The thread state is not needed:
/// pyo3 finds the attached thread itself (see above).
///
/// One `catch_unwind` covers the attach and the whole step (each is a call
/// of its own: one instead of two is -21 instructions per generator item,
/// benches/analysis.md "stop 16"): a
/// panic of the body, of the conversion of its outcome, or of pyo3's
/// attach unwinds out of the attached region (the guard's drop ends the
/// attach), and is then raised as `PanicException`, attached again, as
/// `raise` would; the body is dropped with it (the frame is finished,
/// ERROR), as after any step that raises.
unsafe extern "C" fn step_trampoline<B: NativeBody>(
    _tstate: *mut ffi::PyThreadState,
    gen_: *mut ffi::PyObject,
    state: *mut c_void,
    sent: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PyUnstable_NativeStep {
    let step = move |py: Python<'_>| {
        // SAFETY: CPython calls this `step` of a frame made by
        // `FrameDef::<B>::DEF` with these arguments and the GIL held: the
        // contract of `step_attached`.
        unsafe { step_attached::<B>(py, gen_, state, sent, result) }
    };
    // SAFETY: CPython calls `step` with the GIL held.
    match catch_unwind(AssertUnwindSafe(|| unsafe { attached(step) })) {
        Ok(kind) => kind,
        Err(payload) => {
            let report = move |py: Python<'_>| {
                // Nothing was stored in `result` (a step stores it last,
                // and cannot panic after).
                raise(py, crate::panic::panic_to_pyerr(py, payload));
                // SAFETY: the panic ended every borrow of the body and of
                // `held` (their frames unwound); the state is that of a
                // `FrameDef::<B>::DEF` frame, GIL held, the step of this
                // object is not re-entered and `clear` does not run
                // while it runs: the contract of `drop_slot` (a state the
                // step had already emptied is left alone).
                unsafe { drop_slot::<B>(py, state.cast::<Slot<B>>(), MaybeRaised::Maybe) };
            };
            // SAFETY: CPython calls `step` with the GIL held.
            let reported = catch_unwind(AssertUnwindSafe(|| unsafe { attached(report) }));
            if reported.is_err() {
                set_system_error();
            }
            ffi::PyUnstable_NATIVE_ERROR
        }
    }
}

/// The step callback, once attached.  A panic unwinds out of it (to
/// [`step_trampoline`]).
///
/// # Safety
/// Called by CPython as the `step` of a frame made by `FrameDef::<B>::DEF`.
#[inline(always)]
unsafe fn step_attached<B: NativeBody>(
    py: Python<'_>,
    gen_: *mut ffi::PyObject,
    state: *mut c_void,
    sent: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PyUnstable_NativeStep {
    // SAFETY: `gen_` is the live object being resumed, borrowed for the
    // duration of the call.
    let gen_ = unsafe { Borrowed::from_ptr(py, gen_) };
    // SAFETY: `sent` is NULL or a live reference borrowed for the call.
    let sent = match unsafe { Borrowed::from_ptr_or_opt(py, sent) } {
        Some(v) => Ok(v),
        None => Err(take_raised(py).unwrap_or_else(|| {
            PySystemError::new_err("native step called with NULL but no exception set")
        })),
    };
    let slot = state.cast::<Slot<B>>();
    // SAFETY: `state` is this object's native state, created for bodies
    // of type B by `FrameDef::<B>::DEF` (the callbacks and the size come
    // from the same `B`), zero-filled or written by `new_native_object`.
    // CPython does not run step re-entrantly on one object (cr_running),
    // nor clear while it runs, so the body is borrowed mutably here only;
    // `traverse` (which may run during the step) reads `init` and `held`
    // only, never `body`.  The state never moves while the object lives,
    // so the body can be pinned.  `line` is shared (a `Cell`) with CPython,
    // which reads and writes it through its own pointer on this thread
    // (its line readers, `PyUnstable_Gen_SetNativeLine`), never while
    // another thread runs the step.
    let (body, held, line) = unsafe {
        let line = &(*slot).line;
        if (*slot).init {
            (
                Some(Pin::new_unchecked((*slot).body.assume_init_mut())),
                held_slice((*slot).held.assume_init_ref()),
                line,
            )
        } else {
            (None, &[][..], line)
        }
    };
    let kind = {
        let frame = Frame { gen_, line, held };
        // SAFETY: `result` is a valid out-pointer supplied by CPython.
        let result = unsafe { &mut *result };
        step_inner(body, &frame, sent, result)
    };
    // RETURN and ERROR finish the frame: CPython never steps it again, so
    // the body is dropped now, while the thread is counted as attached (as
    // a Python frame releases its locals when it returns), and `clear`
    // later finds an empty state and need not attach at all.
    if kind == ffi::PyUnstable_NATIVE_RETURN || kind == ffi::PyUnstable_NATIVE_ERROR {
        // SAFETY: the borrows of the body and `held` above have ended; the
        // state is that of a `FrameDef::<B>::DEF` frame, GIL held, the
        // step of this object is not re-entered and `clear` does not run
        // while it runs: the contract of `drop_slot`.
        let raised = if kind == ffi::PyUnstable_NATIVE_RETURN {
            MaybeRaised::No
        } else {
            MaybeRaised::Maybe
        };
        unsafe { drop_slot::<B>(py, slot, raised) };
    }
    kind
}

unsafe extern "C" fn traverse_trampoline<B: NativeBody>(
    state: *mut c_void,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    let slot = state.cast::<Slot<B>>();
    // SAFETY: as in `step_attached`: the GC holds the GIL and reads `init`
    // and `held` only (a running step may borrow `body` mutably); `held`
    // is valid when `init` is true and not changed while the object lives.
    let held = unsafe {
        if !(*slot).init {
            return 0;
        }
        held_slice((*slot).held.assume_init_ref())
    };
    for obj in held {
        // SAFETY: `visit`/`arg` are the pair CPython passed to this
        // callback; `obj` is a live object owned by the state.
        let r = unsafe { visit(obj.as_ptr(), arg) };
        if r != 0 {
            return r;
        }
    }
    0
}

unsafe extern "C" fn clear_trampoline<B: NativeBody>(state: *mut c_void) {
    let slot = state.cast::<Slot<B>>();
    // SAFETY: CPython calls `clear` of a `FrameDef::<B>::DEF` frame with
    // its state (zero-filled or written by `new_native_object`) and the
    // GIL held, never while its step runs; `init` is a plain bool of it.
    // Empty (never filled, or emptied when the frame finished): nothing to
    // drop, no need to attach.
    if !unsafe { (*slot).init } {
        return;
    }
    let clear = move |py: Python<'_>| {
        // SAFETY: as above: the contract of `drop_slot`.
        unsafe { drop_slot::<B>(py, slot, MaybeRaised::Maybe) }
    };
    // SAFETY: CPython calls `clear` with the GIL held.  A panic of pyo3's
    // attach itself cannot be reported from here (no return value): it is
    // dropped rather than unwound into C.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { attached(clear) }));
}

/// Whether an exception may be set when [`drop_slot`] runs: not after a
/// step that returned (it set none), maybe after one that raised and in
/// `clear`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MaybeRaised {
    No,
    Maybe,
}

/// Drop what the state holds (the `held` objects, then the body) and mark
/// it empty; a panic in a drop is reported through [`NativeBody::unraisable`].
/// An exception being propagated (after an ERROR step) is kept aside
/// while the drops run Python code.
///
/// # Safety
/// `slot` is the state of a `FrameDef::<B>::DEF` frame, GIL held, with no
/// borrow of its body or `held` alive: in `clear` (exactly once per
/// object, never while its step runs, possibly on a zero-filled state), or
/// at the end of the step that finished the frame.
unsafe fn drop_slot<B: NativeBody>(py: Python<'_>, slot: *mut Slot<B>, raised: MaybeRaised) {
    // SAFETY: see the contract above.  `init` is reset first, so even a
    // panicking drop leaves no second drop, and `traverse` (which the drops
    // may trigger) sees an empty state.  `held` goes first, then the body
    // (the order of the fields of the former single body).
    let (held, body) = unsafe {
        if !(*slot).init {
            return;
        }
        (*slot).init = false;
        ((*slot).held.assume_init_read(), &raw mut (*slot).body)
    };
    // SAFETY: GIL held; reads the thread's raised exception, if any.
    let pending = if raised == MaybeRaised::No || unsafe { ffi::PyErr_Occurred() }.is_null() {
        None
    } else {
        take_raised(py)
    };
    // The held objects can run `__del__`: no lock or borrow is held here.
    let dropped = catch_unwind(AssertUnwindSafe(|| {
        drop(held);
        // SAFETY: `init` was true, so the body is valid; it is dropped in
        // place (it is pinned) exactly once.
        unsafe { (*body).assume_init_drop() }
    }));
    if let Err(payload) = dropped {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            B::unraisable(py, crate::panic::panic_to_pyerr(py, payload));
        }));
    }
    if let Some(e) = pending {
        e.restore(py);
    }
}

/// A lazily made `Arc<T>` in one word, and a flag for the time before it
/// exists: the shared signal of a [`LazyWaker`] and its "woken before the
/// signal existed" (an `OnceLock<Arc<T>>` and an `AtomicBool` took three
/// words of every coroutine's state).  The word is null (no `T`, flag
/// clear), [`FLAG`](Self::FLAG) (no `T`, flag set), or the pointer of
/// `Arc::into_raw` (set once, by compare-and-swap, and owned until drop).
/// Such a pointer is never null or `FLAG`: it points into an `ArcInner`,
/// past its two counters, in an allocation aligned to at least 8.
pub(crate) struct FlaggedArc<T> {
    ptr: AtomicPtr<T>,
    /// Owns an `Arc<T>` (so it is `Send`/`Sync` only when `Arc<T>` is).
    _owns: PhantomData<Arc<T>>,
}

impl<T> FlaggedArc<T> {
    /// The flag, without a `T`.
    const FLAG: usize = 1;

    /// No `T`, flag clear.
    pub(crate) const fn new() -> Self {
        FlaggedArc {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// The `T` the word points to, if it is a pointer.
    #[inline]
    fn as_ref(&self, p: *mut T) -> Option<&T> {
        if p.addr() <= Self::FLAG {
            return None;
        }
        // SAFETY: `p` was loaded from `self.ptr` and is neither null nor
        // FLAG: it is the `Arc::into_raw` pointer of the `Arc` this value
        // owns (stored once, released only by `drop`), so it stays valid
        // for as long as `&self`.
        Some(unsafe { &*p })
    }

    /// Whether the word is null: no `T` and the flag clear (one load; the
    /// usual state of a coroutine that never suspended on its waker).
    #[inline]
    pub(crate) fn is_clear(&self) -> bool {
        self.ptr.load(Ordering::Acquire).is_null()
    }

    /// A new `Arc` of the `T`, once made.
    #[inline]
    pub(crate) fn get_arc(&self) -> Option<Arc<T>> {
        let p = self.ptr.load(Ordering::Acquire);
        self.as_ref(p)?;
        // SAFETY: `p` is the `Arc::into_raw` pointer of the `Arc` this
        // value owns (checked above), alive while `&self` is: one more
        // strong count, then an `Arc` that owns it.
        unsafe {
            Arc::increment_strong_count(p);
            Some(Arc::from_raw(p))
        }
    }

    /// The `T` (made by `init` now if there is none), and whether the flag
    /// was set when it was made (the flag ends with it).
    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> Arc<T>) -> (&T, bool) {
        let mut current = self.ptr.load(Ordering::Acquire);
        if let Some(t) = self.as_ref(current) {
            return (t, false);
        }
        let new = Arc::into_raw(init()).cast_mut();
        loop {
            match self
                .ptr
                .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(before) => {
                    // SAFETY: `new` is now stored: owned by `self`.
                    return (unsafe { &*new }, before.addr() == Self::FLAG);
                }
                Err(now) => match self.as_ref(now) {
                    Some(t) => {
                        // Another thread made one first: ours goes.
                        // SAFETY: `new` came from `Arc::into_raw` above and
                        // was never stored.
                        drop(unsafe { Arc::from_raw(new) });
                        return (t, false);
                    }
                    // The flag changed meanwhile: try again.
                    None => current = now,
                },
            }
        }
    }

    /// Set the flag if there is no `T` yet; otherwise the `T` (`Err`).
    pub(crate) fn set_flag(&self) -> Result<(), &T> {
        let flag = std::ptr::without_provenance_mut::<T>(Self::FLAG);
        match self.ptr.compare_exchange(
            std::ptr::null_mut(),
            flag,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(now) => self.as_ref(now).map_or(Ok(()), Err),
        }
    }

    /// Clear the flag if there is no `T` yet; otherwise the `T`.
    pub(crate) fn clear_flag(&self) -> Option<&T> {
        let flag = std::ptr::without_provenance_mut::<T>(Self::FLAG);
        match self.ptr.compare_exchange(
            flag,
            std::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => None,
            Err(now) => self.as_ref(now),
        }
    }
}

impl<T> Drop for FlaggedArc<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut();
        if p.addr() > Self::FLAG {
            // SAFETY: a pointer stored here is the `Arc::into_raw` of the
            // `Arc` this value owns; it is released once, here.
            drop(unsafe { Arc::from_raw(p) });
        }
    }
}

impl<T> Default for FlaggedArc<T> {
    fn default() -> Self {
        Self::new()
    }
}

// The borrowed waker of a native coroutine's poll (see
// `crate::waker::LazyWaker`).

static LAZY_WAKER_VTABLE: RawWakerVTable = RawWakerVTable::new(
    lazy_waker_clone,
    lazy_waker_wake,
    lazy_waker_wake,
    lazy_waker_drop,
);

/// # Safety
/// `data` is the `&LazyWaker` given to `with_lazy_waker`, still running.
unsafe fn lazy_waker_ref<'a>(data: *const ()) -> &'a LazyWaker {
    // SAFETY: see the contract above.
    unsafe { &*data.cast::<LazyWaker>() }
}

unsafe fn lazy_waker_clone(data: *const ()) -> RawWaker {
    // SAFETY: the vtable is only used by wakers `with_lazy_waker` lends.
    let waker = ManuallyDrop::new(unsafe { lazy_waker_ref(data) }.to_waker());
    // The owned waker's parts, handed over (ManuallyDrop: not dropped here).
    RawWaker::new(waker.data(), waker.vtable())
}

unsafe fn lazy_waker_wake(data: *const ()) {
    // SAFETY: as in `lazy_waker_clone`.
    unsafe { lazy_waker_ref(data) }.wake_by_ref();
}

unsafe fn lazy_waker_drop(_data: *const ()) {}

/// Run `f` with a waker that wakes `lazy` (see
/// [`LazyWaker`]): the waker of its shared signal
/// if it exists, otherwise one borrowed from `lazy` for the call only.
#[inline]
pub fn with_lazy_waker<R>(lazy: &LazyWaker, f: impl FnOnce(&Waker) -> R) -> R {
    if let Some(signal) = lazy.existing() {
        return f(&Waker::from(signal));
    }
    let raw = RawWaker::new((lazy as *const LazyWaker).cast(), &LAZY_WAKER_VTABLE);
    // SAFETY: the vtable's functions honour the RawWaker contract: they are
    // thread-safe (`LazyWaker` is Sync: an atomic pointer, see `FlaggedArc`), `clone`
    // returns an owned waker of the shared signal (independent of `lazy`),
    // `drop` has nothing to release.  The waker only lends `&Waker` to `f`
    // and is forgotten after it (nothing to drop), so no copy outlives the
    // borrow of `lazy`.
    let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
    f(&waker)
}

/// What the step of a native coroutine lends to the futures it polls,
/// through a [`ScopedRef`]: its frame (to set the line), the objects it
/// holds, and `user`, the coroutine's own slot.
pub struct Running<'a, U: 'static> {
    gen_: *mut ffi::PyObject,
    line: &'a Cell<c_int>,
    held: &'a [Py<PyAny>],
    user: &'a U,
}

impl<'a, U: 'static> Running<'a, U> {
    /// The running frame `frame`, with `user`.
    #[inline]
    pub fn new(frame: &Frame<'a, '_>, user: &'a U) -> Self {
        Running {
            gen_: frame.gen_.as_ptr(),
            line: frame.line,
            held: frame.held,
            user,
        }
    }

    /// The coroutine's slot.
    pub fn user(&self) -> &'a U {
        self.user
    }

    /// The objects the coroutine holds (see [`Frame::held`]).
    pub fn held(&self) -> &'a [Py<PyAny>] {
        self.held
    }

    /// Set the line of the running frame (a store into its line slot),
    /// from the future being polled: with the GIL this thread holds (the
    /// step's, the usual case) or, if the future runs detached from it,
    /// after attaching, because CPython may read the slot from another
    /// thread meanwhile (the line of a running frame, for
    /// `sys._current_frames()`): the GIL orders the store and that read.
    #[inline]
    pub fn set_line(&self, line: u32) {
        // SAFETY: no precondition; the attached thread state or NULL.
        if unsafe { ffi::PyThreadState_GetUnchecked() }.is_null() {
            Python::attach(|_| self.line.set(c_line(line)));
        } else {
            self.line.set(c_line(line));
        }
    }

    /// [`set_line`](Self::set_line), and move the frame to that line at
    /// once (`PyUnstable_Gen_SetNativeLine`, about 50 instructions), for
    /// readers that do not ask CPython: an out-of-process profiler (py-spy)
    /// sampling while the step runs Python code it called.
    pub fn publish_line(&self, line: u32) {
        // SAFETY: no precondition; the attached thread state or NULL.
        if unsafe { ffi::PyThreadState_GetUnchecked() }.is_null() {
            Python::attach(|py| self.publish_line_with(py, line));
        } else {
            // SAFETY: this thread has an attached thread state: it holds
            // the GIL (in a build with one).  Nothing is dropped here that
            // pyo3's deferred pool would delay.
            self.publish_line_with(unsafe { Python::assume_attached() }, line);
        }
    }

    fn publish_line_with(&self, py: Python<'_>, line: u32) {
        // SAFETY: `gen_` is the object whose step lent this value and is
        // still running (see `ScopedRef::with`), so it is alive; GIL held.
        let gen_ = unsafe { Borrowed::from_ptr(py, self.gen_) };
        // A step runs, so the API was found (and is cached).
        let Some(api) = pycoro_ffi::api() else { return };
        // SAFETY: GIL held; `gen_` is live; it fails only if `gen_` has no
        // native frame or its step is not running, neither of which holds
        // here (and a line is not worth an exception: it is dropped).
        if unsafe { (api.PyUnstable_Gen_SetNativeLine)(gen_.as_ptr(), c_line(line)) } < 0 {
            drop(PyErr::take(py));
        }
    }
}

/// A thread-local reference to the [`Running`] value of the innermost step
/// that runs on this thread (the pattern of the `scoped-tls` crate: the
/// value exists only while [`ScopedRef::set`] runs).  Put it in a
/// `thread_local!`.
pub struct ScopedRef<U: 'static> {
    ptr: Cell<*const Running<'static, U>>,
}

impl<U: 'static> ScopedRef<U> {
    /// An empty slot.
    pub const fn new() -> Self {
        ScopedRef {
            ptr: Cell::new(std::ptr::null()),
        }
    }

    /// Make `value` reachable through [`with`](Self::with) while `f` runs,
    /// then restore what was there before (also if `f` panics).
    #[inline]
    pub fn set<R>(&self, value: &Running<'_, U>, f: impl FnOnce() -> R) -> R {
        struct Restore<'a, T>(&'a Cell<*const T>, *const T);
        impl<T> Drop for Restore<'_, T> {
            fn drop(&mut self) {
                self.0.set(self.1);
            }
        }
        // Only the lifetime is erased: `with` hands it back shortened.
        let ptr = (value as *const Running<'_, U>).cast::<Running<'static, U>>();
        let _restore = Restore(&self.ptr, self.ptr.replace(ptr));
        f()
    }

    /// Run `f` with the value of the innermost running [`set`](Self::set),
    /// or `None`.
    #[inline]
    pub fn with<R>(&self, f: impl for<'b> FnOnce(Option<&'b Running<'b, U>>) -> R) -> R {
        let ptr = self.ptr.get();
        // SAFETY: `ptr` is null or was stored by a `set` on this thread
        // (the Cell is not Sync) that is still running: `set` restores the
        // previous pointer when it returns or unwinds, and its borrow
        // keeps the value (and what it refers to) alive and shared for
        // that long.  `f` gets it for a lifetime of its own call only
        // (`Running` is covariant), so nothing escapes.
        f(unsafe { ptr.as_ref() })
    }
}

impl<U: 'static> Default for ScopedRef<U> {
    fn default() -> Self {
        Self::new()
    }
}

/// A value that stays pinned (`pinned`) beside one that does not (`rest`),
/// with the projection of a pinned pair into both: the layout of a native
/// coroutine's body (the future, pinned in the state, beside its
/// bookkeeping).  `rest` is dropped first.
pub struct PinPair<R, F> {
    rest: R,
    pinned: F,
}

impl<R, F> PinPair<R, F> {
    /// The pair.
    #[inline]
    pub fn new(rest: R, pinned: F) -> Self {
        PinPair { rest, pinned }
    }

    /// Both halves of a pinned pair: `pinned` stays pinned, `rest` is not
    /// (structurally) pinned.
    #[inline]
    pub fn project(self: Pin<&mut Self>) -> (&mut R, Pin<&mut F>) {
        // SAFETY: pin projection as `pin-project` does it: `PinPair` has no
        // `Drop` impl and is not `repr(packed)`; it is `Unpin` only when
        // both halves are (auto trait), so `pinned` is never moved out of
        // a pinned pair; `rest` is never treated as pinned.
        unsafe {
            let this = self.get_unchecked_mut();
            (&mut this.rest, Pin::new_unchecked(&mut this.pinned))
        }
    }
}

// Native coroutine functions (`crate::function`): a builtin function
// made from a `PyMethodDef` whose C function binds the arguments and makes
// the coroutine, without pyo3's `#[pyfunction]` machinery.

/// The `PyMethodDef` of the native coroutine function `T`, as an
/// associated constant (`&MethodDef::<T, N>::DEF` is a `&'static`:
/// constant promotion, as for [`FrameDef`]).
struct MethodDef<T, const N: usize>(PhantomData<T>);

impl<T: CoroutineFn<N>, const N: usize> MethodDef<T, N> {
    const DEF: ffi::PyMethodDef = ffi::PyMethodDef {
        ml_name: T::NAME.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: fastcall_trampoline::<T, N>,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: T::DOC.as_ptr(),
    };
}

/// The builtin function object of `T` (`PyCFunction_NewEx`), with
/// `module` as its `__self__` and its name as `__module__`, as
/// `#[pyfunction]`'s are.
pub(crate) fn new_coroutine_function<'py, T: CoroutineFn<N>, const N: usize>(
    module: &Bound<'py, PyModule>,
) -> PyResult<Bound<'py, PyCFunction>> {
    let py = module.py();
    let def: &'static ffi::PyMethodDef = &MethodDef::<T, N>::DEF;
    let name = module.name()?;
    // SAFETY: GIL held (Bound); `def` is 'static and never written (CPython
    // takes a mutable pointer but only reads a method definition); `module`
    // and `name` are live objects borrowed for the call (CPython takes its
    // own references); the result is a new reference or NULL with an
    // exception set.
    unsafe {
        let f = ffi::PyCFunction_NewEx(
            std::ptr::from_ref(def).cast_mut(),
            module.as_ptr(),
            name.as_ptr(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, f)?.cast_into_unchecked())
    }
}

/// The C function of [`MethodDef`] (`METH_FASTCALL | METH_KEYWORDS`):
/// bind the arguments as an `async def T(params...)` binds them, then make
/// the coroutine with [`crate::function::make`].
///
/// The thread is not counted as attached by pyo3 here (that would cost a
/// `PyGILState_Ensure`/`Release` pair per call, see "Counting the thread
/// as attached"): the token is `Python::assume_attached`'s, and nothing on
/// the way to the new object drops a `Py<T>` (`make` makes the body only
/// once the object exists, and runs the first call for a body type
/// counted); an error is raised counted, so that what it releases is
/// released at once.
unsafe extern "C" fn fastcall_trampoline<T: CoroutineFn<N>, const N: usize>(
    _module: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a builtin function with the GIL held; the
    // token lives for this call.
    let py = unsafe { Python::assume_attached() };
    let made = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the vectorcall contract of METH_FASTCALL | METH_KEYWORDS:
        // `args` holds `nargs` positional arguments followed by one value
        // per name of `kwnames` (NULL or a tuple of str), all borrowed for
        // the call.
        let bound = unsafe { bind_arguments(py, T::NAME, &T::PARAMS, args, nargs, kwnames) }?;
        crate::function::make::<T, N>(py, bound)
    }));
    match made {
        Ok(Ok(obj)) => obj.into_ptr(),
        Ok(Err(err)) => {
            // SAFETY: the GIL is held (above).
            unsafe { attached(|py| err.restore(py)) };
            std::ptr::null_mut()
        }
        Err(payload) => {
            // SAFETY: the GIL is held (above).
            let raised = catch_unwind(AssertUnwindSafe(|| unsafe {
                attached(|py| raise(py, crate::panic::panic_to_pyerr(py, payload)))
            }));
            if raised.is_err() {
                set_system_error();
            }
            std::ptr::null_mut()
        }
    }
}

/// Bind a vectorcall's arguments to the parameters `params` of `name` as
/// CPython binds those of `async def name(params...)` (all positional or
/// keyword, none optional), with its `TypeError` messages.  The usual call,
/// exactly `N` positional arguments and no keywords, is bound inline
/// (about 10 instructions for one argument against 54 through the general
/// binding, benches/analysis.md "stop 16").
///
/// # Safety
/// The vectorcall contract: `args` points to `nargs` positional values
/// then one value per name in `kwnames` (NULL, or a tuple of str), all
/// live and borrowed for `'a`; GIL held.
#[inline(always)]
unsafe fn bind_arguments<'a, 'py, const N: usize>(
    py: Python<'py>,
    name: &CStr,
    params: &[&'static str; N],
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<[Borrowed<'a, 'py, PyAny>; N]> {
    if kwnames.is_null() && usize::try_from(nargs) == Ok(N) {
        // SAFETY: `args` holds `nargs` = N live values borrowed for 'a and
        // no keyword values (the contract; `kwnames` is NULL); a vectorcall
        // never passes a NULL argument.
        return Ok(std::array::from_fn(|i| unsafe {
            Borrowed::from_ptr(py, *args.add(i))
        }));
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { bind_arguments_general(py, name, params, args, nargs, kwnames) }
}

/// [`bind_arguments`] for every call: the positional arguments, the
/// keywords and the `TypeError`s.
///
/// # Safety
/// As for [`bind_arguments`].
#[inline(never)]
unsafe fn bind_arguments_general<'a, 'py, const N: usize>(
    py: Python<'py>,
    name: &CStr,
    params: &[&'static str; N],
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<[Borrowed<'a, 'py, PyAny>; N]> {
    // In CPython's order (`initialize_locals`): the positional arguments
    // that fit, the keywords, then too many positional, then missing.
    let nargs = usize::try_from(nargs).unwrap_or(0);
    let mut slots = [std::ptr::null_mut::<ffi::PyObject>(); N];
    let fit = nargs.min(N);
    // SAFETY: `args` holds at least `nargs` values (the contract).
    slots[..fit].copy_from_slice(unsafe { std::slice::from_raw_parts(args, fit) });
    if !kwnames.is_null() {
        // SAFETY: a non-NULL `kwnames` is a live tuple (the contract).
        let kwnames = unsafe { Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>() };
        for (j, kw) in kwnames.iter_borrowed().enumerate() {
            // SAFETY: one value per keyword name follows the positional
            // ones (the contract).
            let value = unsafe { *args.add(nargs + j) };
            let kw = kw.cast::<PyString>()?;
            let kw = kw.to_cow()?;
            let Some(i) = params.iter().position(|p| *p == kw) else {
                return Err(keyword_error(name, &kw, None));
            };
            if !slots[i].is_null() {
                return Err(keyword_error(name, &kw, Some(params[i])));
            }
            slots[i] = value;
        }
    }
    if nargs > N {
        return Err(too_many_arguments(name, N, nargs));
    }
    if slots.iter().any(|p| p.is_null()) {
        return Err(missing_arguments(name, params, &slots));
    }
    // SAFETY: every slot is now a live object borrowed for 'a (checked
    // non-NULL above; from `args`, the contract).
    Ok(slots.map(|p| unsafe { Borrowed::from_ptr(py, p) }))
}

/// The `TypeError` of a call with `nargs` positional arguments to a
/// function of `n` parameters.
#[cold]
#[inline(never)]
fn too_many_arguments(name: &CStr, n: usize, nargs: usize) -> PyErr {
    PyTypeError::new_err(format!(
        "{}() takes {n} positional argument{} but {nargs} {} given",
        name.to_string_lossy(),
        if n == 1 { "" } else { "s" },
        if nargs == 1 { "was" } else { "were" },
    ))
}

/// The `TypeError` of a keyword argument `kw` that is no parameter
/// (`param` None) or names one already given (`param`).
#[cold]
#[inline(never)]
fn keyword_error(name: &CStr, kw: &str, param: Option<&str>) -> PyErr {
    let name = name.to_string_lossy();
    PyTypeError::new_err(match param {
        None => format!("{name}() got an unexpected keyword argument '{kw}'"),
        Some(p) => format!("{name}() got multiple values for argument '{p}'"),
    })
}

/// The `TypeError` of a call that left the parameters whose slots are
/// NULL without a value.
#[cold]
#[inline(never)]
fn missing_arguments(name: &CStr, params: &[&str], slots: &[*mut ffi::PyObject]) -> PyErr {
    let name = name.to_string_lossy();
    let missing: Vec<String> = params
        .iter()
        .zip(slots)
        .filter(|(_, slot)| slot.is_null())
        .map(|(param, _)| format!("'{param}'"))
        .collect();
    {
        let list = match missing.as_slice() {
            [one] => one.clone(),
            [a, b] => format!("{a} and {b}"),
            [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
            [] => String::new(),
        };
        PyTypeError::new_err(format!(
            "{name}() missing {} required positional argument{}: {list}",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
        ))
    }
}

/// The pin projection of an [`Interruptible`](crate::interrupt::Interruptible):
/// its wait-point id (not pinned) and its future (pinned).
#[inline]
pub(crate) fn project_interruptible<F>(
    this: Pin<&mut crate::interrupt::Interruptible<F>>,
) -> (&mut Option<std::num::NonZeroU64>, Pin<&mut F>) {
    // SAFETY: pin projection as `pin-project` does it: `Interruptible` has
    // no `Drop` impl and is not `repr(packed)`; it is `Unpin` only when `F`
    // is (auto trait), so `inner` is never moved out of a pinned value (its
    // fields are private to the crate, and nothing else moves them); `id`
    // is never treated as pinned.
    unsafe {
        let this = this.get_unchecked_mut();
        (&mut this.id, Pin::new_unchecked(&mut this.inner))
    }
}

/// `PyUnstable_Gen_GetNativeState(obj, def)`: the native state of `obj`, a
/// generator, coroutine or async generator made from `def`; `TypeError`
/// if it has no native frame or was made from another definition (CPython
/// checks the owner).
#[cfg(test)]
fn native_state(
    obj: &Bound<'_, PyAny>,
    def: &'static ffi::PyUnstable_NativeFrameDef,
) -> PyResult<*mut c_void> {
    native_state_with(ffi::api()?, obj, def)
}

/// `PyUnstable_Gen_GetNativeState(obj, def)` with the API already found.
#[inline(always)]
fn native_state_with(
    api: &ffi::NativeFramesApi,
    obj: &Bound<'_, PyAny>,
    def: &'static ffi::PyUnstable_NativeFrameDef,
) -> PyResult<*mut c_void> {
    let get_state = api.PyUnstable_Gen_GetNativeState;
    // SAFETY: GIL held (Bound); `obj` is live, `def` a valid definition;
    // returns NULL with TypeError set if `obj` has no native frame or was
    // made from another definition.
    let state = unsafe { get_state(obj.as_ptr(), def) };
    if state.is_null() {
        return Err(take_raised(obj.py())
            .unwrap_or_else(|| PySystemError::new_err("no native state, and no exception set")));
    }
    Ok(state)
}

/// The size of the native state of bodies of type `B` (for the layout
/// test in `coroutine`).
#[cfg(test)]
pub(crate) fn state_size<B>() -> usize {
    size_of::<Slot<B>>()
}

/// The parts of a state's header: `init` and the line slot, and `held`.
#[cfg(test)]
pub(crate) fn state_header_sizes() -> (usize, usize) {
    (offset_of!(Slot<()>, held), size_of::<Held>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::exceptions::PyTypeError;

    struct Mine(#[allow(dead_code)] u64);
    struct Theirs;

    impl NativeBody for Mine {
        fn step<'py>(self: Pin<&mut Self>, frame: &Frame<'_, 'py>, _: Sent<'_, 'py>) -> Step {
            Step::Return(frame.py().None())
        }
    }

    impl NativeBody for Theirs {
        fn step<'py>(self: Pin<&mut Self>, frame: &Frame<'_, 'py>, _: Sent<'_, 'py>) -> Step {
            Step::Return(frame.py().None())
        }
    }

    #[test]
    fn the_state_is_reached_only_with_the_definition_of_its_body_type() {
        Python::attach(|py| {
            let def = crate::coroutine_def!("owner");
            let functions = FunctionCache::new();
            let code = || def.code_and_globals(py);
            let coro =
                new_native_object(py, &functions, code, Mine(7), Vec::new(), Kind::Coroutine)
                    .unwrap();
            let mine = functions.first::<Mine>(py, &code).unwrap().unwrap().def;
            assert!(native_state(&coro, mine).is_ok());
            // CPython checks the owner: another body type's definition
            // gets TypeError, not the state.
            let err = native_state(&coro, FrameDef::<Theirs>::def()).unwrap_err();
            assert!(err.is_instance_of::<PyTypeError>(py), "{err}");
            // And an object that is no native coroutine at all.
            let err = native_state(&code().unwrap().0, mine).unwrap_err();
            assert!(err.is_instance_of::<PyTypeError>(py), "{err}");
            coro.call_method0("close").unwrap();
        });
    }

    #[test]
    fn each_body_type_gets_its_own_native_function_over_one_code_object() {
        Python::attach(|py| {
            let def = crate::coroutine_def!("two_bodies");
            let functions = FunctionCache::new();
            let code = || def.code_and_globals(py);
            let new_mine = |n| {
                new_native_object(py, &functions, code, Mine(n), Vec::new(), Kind::Coroutine)
                    .unwrap()
            };
            let a = new_mine(1);
            let b = new_native_object(py, &functions, code, Theirs, Vec::new(), Kind::Coroutine)
                .unwrap();
            let c = new_mine(2);
            // The first body type's function is the first; the other one
            // is made once and found again.
            assert!(functions.first::<Mine>(py, &code).unwrap().is_some());
            assert!(functions.first::<Theirs>(py, &code).unwrap().is_none());
            let (theirs, theirs_def) = functions.other::<Theirs>(py, &code).unwrap();
            assert!(theirs.is(&functions.other::<Theirs>(py, &code).unwrap().0));
            assert_eq!(functions.others.lock().unwrap().len(), 1);
            assert!(theirs.get_type().name().unwrap() == "native_function");
            // Each object's state is reached with its own definition.
            assert!(native_state(&b, theirs_def).is_ok());
            assert!(native_state(&a, theirs_def).is_err());
            // One code object for all of them.
            fn code_of<'py>(o: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
                o.getattr("cr_code").unwrap()
            }
            assert!(code_of(&a).is(code_of(&b)));
            assert!(code_of(&a).is(code_of(&c)));
            assert!(code_of(&a).is(theirs.getattr("__code__").unwrap()));
            for o in [a, b, c] {
                let stop = o.call_method1("send", (py.None(),)).unwrap_err();
                assert!(stop.is_instance_of::<pyo3::exceptions::PyStopIteration>(py));
            }
        });
    }
}
