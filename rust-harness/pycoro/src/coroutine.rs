//! Rust futures as true CPython coroutines.
//!
//! [`NativeCoroutine::new`] wraps any `Future<Output = PyResult<Py<PyAny>>> +
//! Send + 'static` in an object for which `type(c) is types.CoroutineType`:
//! CPython's own coroutine type, whose frame is a *native frame* (made by
//! `PyUnstable_Coro_NewNative`) run by the harness's step function.  Everything
//! Python sees (`send`/`throw`/`close`, `cr_frame`, `cr_await`, the
//! never-awaited warning, "cannot reuse already awaited coroutine") is
//! CPython's own machinery.
//!
//! # One step
//!
//! Each time CPython resumes the coroutine, the step function:
//! 1. delivers what was sent in: the result (or exception) of the Python
//!    awaitable a [`py_await`] asked for goes to that `PyAwait`; an
//!    exception thrown while the future waited on a *Rust* waker (e.g.
//!    `Task.cancel()` during a [`crate::sleep`], or `close()`) goes to the
//!    [`crate::interruptible`] wait point it is suspended in, if any;
//!    otherwise nobody in the future can receive it, so it propagates at
//!    once and the future is dropped (its `Drop` runs), as PyO3's
//!    coroutines do (see [`crate::interrupt`]);
//! 2. polls the future (under `catch_unwind`), with "the current coroutine"
//!    set in a thread-local so [`py_await`] can reach its slot;
//! 3. maps the result: `Ready(Ok(v))` returns `v`; `Ready(Err(e))` raises
//!    `e`, the same exception object (identity and `__cause__` kept).  An
//!    exception that came into this step (thrown in, or raised by the
//!    awaited object) and comes back out propagates unchanged, as through
//!    an `await`; any other is raised as `raise e` would, so it gets the
//!    exception being handled as its `__context__`, as in `async def`.
//!    `Pending` with an awaitable requested awaits it (`AWAIT`), otherwise
//!    the coroutine suspends as [`crate::runtime`] describes.
//!
//! # Memory
//!
//! A coroutine is one Python object and, usually, no other allocation: the
//! future lives inline in the native state (pinned there; boxed only when
//! larger than 256 bytes or aligned to more than 16), beside the slot the
//! step shares with [`py_await`] and the waker's state.  The shared
//! `WakeSignal` (private module `waker`) behind the waker is allocated only when a
//! future keeps a clone of its waker or the coroutine waits for it (see
//! `LazyWaker`).
//!
//! # Garbage collection
//!
//! Python objects captured by the future are invisible to the cyclic GC
//! (Rust cannot enumerate them), so a cycle through them is never
//! collected (a leak, not a crash).  Objects given to
//! [`NativeCoroutine::builder`]`.hold(..)` are owned by the coroutine's
//! state and visited by its `traverse`; the future reaches them with
//! [`held`].
//!
//! # Lines
//!
//! The frame reports the line of the latest await point ([`py_await`],
//! [`crate::yield_now`], [`crate::sleep`], [`crate::lines::located`]: all
//! `#[track_caller]`) or marked line ([`crate::lines::here`],
//! [`crate::lines::raise`]), or of the [`NativeCoroutine::new`] call before
//! the first one, clamped by CPython to the range of the [`CoroutineDef`];
//! see [`crate::lines`].
//!
//! ```
//! use pyo3::prelude::*;
//! use pycoro::{NativeCoroutine, coroutine_def, py_await};
//!
//! Python::attach(|py| {
//!     let inner = py.eval(c"__import__('asyncio').sleep(0, 'inner')", None, None).unwrap();
//!     let inner = inner.unbind();
//!     let coro = NativeCoroutine::new(py, coroutine_def!("outer"), async move {
//!         let v = py_await(inner).await?;
//!         Ok(v)
//!     })
//!     .unwrap();
//!     assert!(coro.get_type().is(&py.import("types").unwrap().getattr("CoroutineType").unwrap()));
//!     // asyncio.sleep(0) yields None once, then returns its result.
//!     assert!(coro.call_method1("send", (py.None(),)).unwrap().is_none());
//!     let stop = coro.call_method1("send", (py.None(),)).unwrap_err();
//!     assert!(stop.is_instance_of::<pyo3::exceptions::PyStopIteration>(py));
//!     assert_eq!(stop.value(py).getattr("value").unwrap().to_string(), "inner");
//! });
//! ```

use std::cell::Cell;
use std::future::Future;
use std::mem::size_of;
use std::num::NonZeroU64;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::raw::{
    self, CodeAndGlobals, Frame, FrameDef, FunctionCache, Kind, NativeBody, PinPair, Running,
    ScopedRef, Sent, Step,
};
use crate::runtime::{self, Suspend};
use crate::waker::LazyWaker;

/// The boxed future a native coroutine runs.
type BoxFuture = Pin<Box<dyn Future<Output = PyResult<Py<PyAny>>> + Send + 'static>>;

/// The static description of one native "def": what its code object says
/// (file, name, lines), and the cached code object, globals and native
/// functions (`PyUnstable_NativeFunction_New`, one per body type: a future
/// type, usually one).  Make one per Rust function with
/// [`coroutine_def!`](crate::coroutine_def).
pub struct CoroutineDef {
    module: &'static str,
    name: &'static str,
    qualname: &'static str,
    file: &'static str,
    manifest_dir: &'static str,
    firstlineno: u32,
    nlines: u32,
    spans: Option<&'static str>,
    code: PyOnceLock<(Py<PyAny>, Py<PyDict>)>,
    functions: FunctionCache,
}

impl CoroutineDef {
    /// Describe a native def.  `module` (a `module_path!()`: its first
    /// segment is used) names the Python module whose
    /// `__dict__` gives the native functions their globals (looked up in
    /// `sys.modules` when the code object is first made; a fresh namespace
    /// with that `__name__` if the module is not imported); `file` is
    /// `file!()` and `manifest_dir` `env!("CARGO_MANIFEST_DIR")` of the
    /// defining crate, joined into an absolute path so tracebacks can show
    /// the Rust source line.  `firstlineno` is the line of the
    /// `coroutine_def!` call: if `spans` (the `PYCORO_FN_SPANS` table of
    /// `pycoro_build::emit_fn_spans()`, see [`crate::lines`]) has an entry
    /// for it, the frame spans the enclosing function's lines; otherwise
    /// lines `firstlineno..firstlineno + nlines`.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        module: &'static str,
        name: &'static str,
        qualname: &'static str,
        file: &'static str,
        manifest_dir: &'static str,
        firstlineno: u32,
        nlines: u32,
        spans: Option<&'static str>,
    ) -> Self {
        Self {
            module,
            name,
            qualname,
            file,
            manifest_dir,
            firstlineno,
            nlines,
            spans,
            code: PyOnceLock::new(),
            functions: FunctionCache::new(),
        }
    }

    /// The lines the code object spans: `(co_firstlineno, nlines)`.
    pub(crate) fn lines(&self) -> (u32, u32) {
        match crate::lines::fn_span(self.spans, self.file, self.firstlineno) {
            Some((first, last)) => (first, last - first + 1),
            None => (self.firstlineno, self.nlines),
        }
    }

    /// The native functions made over the code object.
    pub(crate) fn functions(&self) -> &FunctionCache {
        &self.functions
    }

    /// The `co_name` of the code object.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The `co_qualname` of the code object.
    pub(crate) fn qualname(&self) -> &'static str {
        self.qualname
    }

    /// The absolute source path recorded as `co_filename`: `file!()` is
    /// relative to the workspace root (or the package root), so try the
    /// manifest directory and its ancestors.
    pub(crate) fn filename(&self) -> String {
        let file = Path::new(self.file);
        if file.is_absolute() {
            return self.file.to_owned();
        }
        Path::new(self.manifest_dir)
            .ancestors()
            .map(|dir| dir.join(file))
            .find(|p| p.is_file())
            .unwrap_or_else(|| Path::new(self.manifest_dir).join(file))
            .to_string_lossy()
            .into_owned()
    }

    fn globals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let modules = py
            .import("sys")?
            .getattr("modules")?
            .cast_into::<PyDict>()?;
        // `module_path!()` -> the crate, i.e. the extension's Python name.
        let name = self.module.split("::").next().unwrap_or(self.module);
        if let Some(module) = modules.get_item(name)? {
            if let Ok(dict) = module.getattr("__dict__")?.cast_into::<PyDict>() {
                // An extension module's namespace has no `__builtins__`
                // (Python modules get one when code first runs in them), but
                // C code running under our frame may look it up in the
                // frame's globals: `PyImport_Import` raises KeyError without
                // it.
                if !dict.contains("__builtins__")? {
                    dict.set_item("__builtins__", py.import("builtins")?)?;
                }
                return Ok(dict);
            }
        }
        let dict = PyDict::new(py);
        dict.set_item("__name__", name)?;
        dict.set_item("__builtins__", py.import("builtins")?)?;
        Ok(dict)
    }

    /// The native code object (`CO_COROUTINE`), made once, then cached for
    /// the process (sub-interpreters are not supported).
    pub fn code<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.code_and_globals(py).map(|(code, _)| code)
    }

    /// The code object and the frame's globals, cached.
    #[inline]
    pub(crate) fn code_and_globals<'py>(&self, py: Python<'py>) -> PyResult<CodeAndGlobals<'py>> {
        let (code, globals) = self.code.get_or_try_init(py, || {
            let (firstlineno, nlines) = self.lines();
            let code = raw::new_native_code(
                py,
                &self.filename(),
                self.name,
                self.qualname,
                firstlineno,
                nlines,
                Kind::Coroutine,
            )?;
            Ok::<_, PyErr>((code.unbind(), self.globals(py)?.unbind()))
        })?;
        Ok((code.bind(py).clone(), globals.bind(py).clone()))
    }
}

/// Make a `&'static` [`CoroutineDef`] for the enclosing Rust function:
/// `coroutine_def!("name")` or `coroutine_def!("name", nlines = 40)`.  The
/// Python module is the first segment of `module_path!()` (the crate name,
/// which for an extension module is its Python name).  With
/// `pycoro_build::emit_fn_spans()` in the crate's `build.rs`, the code
/// object spans the enclosing function, from its `fn` line to its closing
/// brace; without it, `nlines` lines (default 64) from the macro call's
/// line (see [`crate::lines`]).
#[macro_export]
macro_rules! coroutine_def {
    ($name:literal) => {
        $crate::coroutine_def!($name, nlines = 64)
    };
    ($name:literal, nlines = $nlines:expr) => {{
        static DEF: $crate::CoroutineDef = $crate::CoroutineDef::new(
            module_path!(),
            $name,
            $name,
            file!(),
            env!("CARGO_MANIFEST_DIR"),
            line!(),
            $nlines,
            option_env!("PYCORO_FN_SPANS"),
        );
        &DEF
    }};
}

/// Per-coroutine slot between the step function and the [`PyAwait`]
/// futures polled inside it.
///
/// Kept small (it is written into every coroutine): ids are non-zero, the
/// rarely set exceptions are boxed, and each field is a `Cell` (taken and
/// put back: no borrow flag, 8 bytes less than a `RefCell<Io>`).
#[derive(Default)]
struct Io {
    /// The last id given to a PyAwait or a wait point (ids start at 1).
    last_id: Cell<u64>,
    /// Asked for during this poll: (PyAwait id, awaitable).
    request: Cell<Option<(Id, Py<PyAny>)>>,
    /// The PyAwait whose awaitable CPython is driving.
    waiting: Cell<Option<Id>>,
    /// Delivered to that PyAwait at the next poll.
    reply: Cell<Option<(Id, Reply)>>,
    /// The `Interruptible` wait point the last poll suspended in.
    listening: Cell<Option<Id>>,
    /// An exception thrown in at that wait point, delivered at the next poll.
    interrupt: Cell<Option<Box<(Id, PyErr)>>>,
}

type Id = NonZeroU64;

/// What a PyAwait receives: the result, or the (boxed) exception.
type Reply = Result<Py<PyAny>, Box<PyErr>>;

impl Io {
    fn new_id(&self) -> Id {
        let id = self.last_id.get() + 1;
        self.last_id.set(id);
        Id::new(id).unwrap_or(Id::MAX)
    }
}

/// What the futures polled by a step reach through [`CURRENT`].
#[derive(Default)]
struct Shared {
    io: Io,
    /// Line to report at the first step: the `NativeCoroutine::new` call
    /// (0 once reported).  Here rather than in `CoroState` to fill the
    /// padding: a body of up to 128 bytes is copied into the state
    /// without a call to `memcpy`.
    first_line: u32,
}

thread_local! {
    /// The coroutine whose future is being polled on this thread
    /// (innermost: a poll may run Python code that steps another one).
    static CURRENT: ScopedRef<Shared> = const { ScopedRef::new() };
}

fn with_current<R>(f: impl FnOnce(Option<&Io>) -> R) -> R {
    CURRENT.with(|current| {
        current.with(|running| match running {
            Some(running) => f(Some(&running.user().io)),
            None => f(None),
        })
    })
}

/// For [`crate::lines`]: set the line of the native coroutine whose future
/// is being polled (no-op outside a poll).
pub(crate) fn set_current_line(line: u32) {
    CURRENT.with(|current| {
        current.with(|running| {
            if let Some(running) = running {
                running.set_line(line);
            }
        })
    })
}

/// For [`crate::lines::here`]: [`set_current_line`], also moving the
/// frame to the line at once (see `Running::publish_line`).
pub(crate) fn publish_current_line(line: u32) {
    CURRENT.with(|current| {
        current.with(|running| {
            if let Some(running) = running {
                running.publish_line(line);
            }
        })
    })
}

/// The bookkeeping of a native coroutine, beside its future.
pub(crate) struct CoroState {
    waker: LazyWaker,
    shared: Shared,
}

impl Drop for CoroState {
    fn drop(&mut self) {
        // Runs in `clear`, GIL held, before the future is dropped.
        // Release the Python objects the waker's hook owns now: a waker
        // clone may outlive the coroutine in another thread.  The slot's
        // objects are released with the fields, right after.
        drop(self.waker.reset());
    }
}

/// The body stored in the coroutine's native state: the future, inline
/// (pinned in the state: no allocation), or boxed when it is too large
/// or over-aligned for it (see [`Builder::build`]).
pub(crate) type Body<F> = PinPair<CoroState, F>;

/// Largest future kept inline in the coroutine object (bytes); a larger
/// one is boxed, so that the object stays small for CPython's allocator.
const INLINE_FUTURE_MAX: usize = 256;

fn suspend(py: Python<'_>, state: &CoroState) -> Step {
    let request = {
        let io = &state.shared.io;
        // A reply nobody took: an exception in it was not handled by
        // the body, so it propagates; a value is kept for its PyAwait
        // (or overwritten by the next reply if that was dropped).
        match io.reply.take() {
            Some((_, Err(e))) => return Step::Error(*e),
            other => io.reply.set(other),
        }
        io.request.take().map(|(id, obj)| {
            io.waiting.set(Some(id));
            obj
        })
    };
    if let Some(obj) = request {
        return Step::Await(obj);
    }
    match runtime::suspend(py, state.waker.signal()) {
        Ok(Suspend::BareYield) => Step::Yield(py.None()),
        Ok(Suspend::Await(fut)) => Step::Await(fut),
        Err(e) => Step::Raise(e),
    }
}

impl<F> NativeBody for Body<F>
where
    F: Future<Output = PyResult<Py<PyAny>>> + Send + 'static,
{
    fn step<'py>(self: Pin<&mut Self>, frame: &Frame<'_, 'py>, sent: Sent<'_, 'py>) -> Step {
        let py = frame.py();
        let (state, future) = self.project();
        // The exception that came in, to tell propagation from a new raise.
        let mut delivered: Option<Bound<'py, PyAny>> = None;
        // Whether it went to a wait point (`Io::interrupt`, empty between
        // steps).
        let mut interrupted = false;
        {
            let io = &state.shared.io;
            let listening = io.listening.take();
            match (io.waiting.take(), sent) {
                (Some(id), sent) => {
                    let sent = match sent {
                        Ok(v) => Ok(v.to_owned().unbind()),
                        Err(e) => {
                            delivered = Some(e.value(py).clone().into_any());
                            Err(Box::new(e))
                        }
                    };
                    io.reply.set(Some((id, sent)));
                }
                // Resumed after a bare yield or a wake-up future: the value
                // carries no information (as after `await asyncio.sleep(0)`).
                (None, Ok(_)) => {}
                // Thrown in while the future waits on a Rust waker: to the
                // `Interruptible` it waits in; with none, nobody can receive
                // it: it propagates and `clear` drops the future.
                (None, Err(e)) => match listening {
                    Some(id) => {
                        let e = pep479(py, e);
                        delivered = Some(e.value(py).clone().into_any());
                        io.interrupt.set(Some(Box::new((id, e))));
                        interrupted = true;
                    }
                    None => return Step::Error(e),
                },
            }
        }
        // Drop a stale hook (its asyncio future) now, with the GIL held.
        drop(state.waker.reset());

        // The line of the `NativeCoroutine::new` call, before the first
        // await point records its own (see `crate::lines`).
        let first_line = std::mem::take(&mut state.shared.first_line);
        if first_line != 0 {
            frame.set_line(first_line);
        }
        let running = Running::new(frame, &state.shared);
        let poll = CURRENT.with(|current| {
            current.set(&running, || {
                raw::with_lazy_waker(&state.waker, |waker| {
                    let mut cx = Context::from_waker(waker);
                    catch_unwind(AssertUnwindSafe(|| future.poll(&mut cx)))
                })
            })
        });
        // Delivered but not taken (the wait point was not polled): it
        // propagates, as if the wait point had not been interruptible.
        if interrupted {
            let untaken = state.shared.io.interrupt.take();
            if let Some(untaken) = untaken {
                return Step::Error(untaken.1);
            }
        }
        match poll {
            Err(payload) => Step::Raise(crate::panic::panic_to_pyerr(py, payload)),
            Ok(Poll::Ready(Ok(v))) => Step::Return(v),
            // Passed through (`py_await(..).await?`): unchanged, as an
            // exception propagates through an `await` in Python.
            Ok(Poll::Ready(Err(e))) if delivered.is_some_and(|d| e.value(py).is(&d)) => {
                Step::Error(e)
            }
            // Made or re-raised by the body: `raise e`.
            Ok(Poll::Ready(Err(e))) => Step::Raise(e),
            Ok(Poll::Pending) => suspend(py, state),
        }
    }
}

/// Builder for a native coroutine that owns Python objects visible to the
/// GC (see the module docs).
#[must_use]
pub struct Builder {
    def: &'static CoroutineDef,
    held: Vec<Py<PyAny>>,
    location: &'static Location<'static>,
}

impl Builder {
    /// Keep `obj` in the coroutine's state (visited by `traverse`, released
    /// by `clear`); the future reads it back with [`held`].
    pub fn hold(mut self, obj: Py<PyAny>) -> Self {
        self.held.push(obj);
        self
    }

    /// Create the coroutine running `future`.  A future of at most
    /// `INLINE_FUTURE_MAX` (256) bytes lives inline in the coroutine
    /// object; a larger (or over-aligned) one is boxed.
    #[inline(always)]
    pub fn build<F>(self, py: Python<'_>, future: F) -> PyResult<Bound<'_, PyAny>>
    where
        F: Future<Output = PyResult<Py<PyAny>>> + Send + 'static,
    {
        let def = self.def;
        let code = || def.code_and_globals(py);
        let state = CoroState {
            waker: LazyWaker::default(),
            shared: Shared {
                first_line: self.location.line(),
                ..Shared::default()
            },
        };
        if fits_inline::<F>() {
            let body = Body::new(state, future);
            raw::new_native_object(py, &def.functions, code, body, self.held, Kind::Coroutine)
        } else {
            let future: BoxFuture = Box::pin(future);
            let body = Body::new(state, future);
            raw::new_native_object(py, &def.functions, code, body, self.held, Kind::Coroutine)
        }
    }
}

/// Whether a future of type `F` is kept inline in the coroutine object
/// (at most `INLINE_FUTURE_MAX` bytes, and not over-aligned); otherwise it
/// is boxed.
#[inline(always)]
pub(crate) fn fits_inline<F>() -> bool
where
    F: Future<Output = PyResult<Py<PyAny>>> + Send + 'static,
{
    FrameDef::<Body<F>>::FITS && size_of::<F>() <= INLINE_FUTURE_MAX
}

/// The body of a native coroutine running `future`, reporting
/// `first_line` until its first await point (for [`crate::function`]).
#[inline(always)]
pub(crate) fn body<F>(first_line: u32, future: F) -> Body<F> {
    let state = CoroState {
        waker: LazyWaker::default(),
        shared: Shared {
            first_line,
            ..Shared::default()
        },
    };
    Body::new(state, future)
}

/// `future`, boxed (for a future too large or over-aligned to be inline).
pub(crate) fn boxed<F>(future: F) -> BoxFuture
where
    F: Future<Output = PyResult<Py<PyAny>>> + Send + 'static,
{
    Box::pin(future)
}

/// Namespace of the constructors of native coroutines.
pub struct NativeCoroutine;

impl NativeCoroutine {
    /// A true coroutine (`types.CoroutineType`) that runs `future` when
    /// awaited: its result is the coroutine's return value, its error the
    /// exception it raises.
    #[track_caller]
    #[allow(clippy::new_ret_no_self)] // a Python object, not a Rust value
    pub fn new<'py, F>(
        py: Python<'py>,
        def: &'static CoroutineDef,
        future: F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = PyResult<Py<PyAny>>> + Send + 'static,
    {
        Self::builder(def).build(py, future)
    }

    /// A [`Builder`], to give the coroutine objects to hold.
    #[track_caller]
    pub fn builder(def: &'static CoroutineDef) -> Builder {
        Builder {
            def,
            held: Vec::new(),
            location: Location::caller(),
        }
    }
}

/// PEP 479 at a wait point: a `StopIteration` thrown into an `async def`
/// suspended at an await is raised inside the awaited frame, which turns it
/// into `RuntimeError` ("coroutine raised StopIteration", with the
/// `StopIteration` as `__cause__` and `__context__`) before the awaiting
/// code sees it.  A Rust wait point stands for such a frame.
fn pep479(py: Python<'_>, err: PyErr) -> PyErr {
    if !err.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) {
        return err;
    }
    let stop = err.into_value(py);
    let converted = PyRuntimeError::new_err("coroutine raised StopIteration");
    let value = converted.value(py);
    if value.setattr("__context__", &stop).is_err() {
        return PyErr::from_value(stop.into_bound(py).into_any());
    }
    converted.set_cause(py, Some(PyErr::from_value(stop.into_bound(py).into_any())));
    converted
}

/// For [`crate::interrupt`]: take the exception delivered to wait point
/// `id` of the coroutine being polled, if any.
pub(crate) fn take_interrupt(id: NonZeroU64) -> Option<PyErr> {
    with_current(|io| {
        let io = io?;
        match io.interrupt.take() {
            Some(interrupt) if interrupt.0 == id => Some(interrupt.1),
            other => {
                io.interrupt.set(other);
                None
            }
        }
    })
}

/// For [`crate::interrupt`]: a wait point (`id`, or a new id when `None`)
/// returns `Pending`; the first one in a poll receives what is thrown in.
/// `None` outside a native coroutine.
pub(crate) fn listen(id: Option<NonZeroU64>) -> Option<NonZeroU64> {
    with_current(|io| {
        let io = io?;
        let id = match id {
            Some(id) => id,
            None => io.new_id(),
        };
        if io.listening.get().is_none() {
            io.listening.set(Some(id));
        }
        Some(id)
    })
}

/// The `index`-th object given to [`Builder::hold`] of the coroutine being
/// polled (a new reference), or `None` outside a native coroutine.
pub fn held(py: Python<'_>, index: usize) -> Option<Py<PyAny>> {
    CURRENT
        .with(|current| current.with(|running| running?.held().get(index).map(|o| o.clone_ref(py))))
}

/// Await a Python awaitable from Rust: `py_await(obj).await` makes the
/// native coroutine `await obj` exactly as an `await` expression would
/// (CPython drives `obj`: `cr_await`, `throw`/`close` forwarding), and
/// resolves to its result or its exception.
///
/// Only inside a native coroutine's future, and one at a time (polling two
/// `PyAwait`s in the same step, e.g. in a `join`, makes the second fail
/// with `RuntimeError`; use `asyncio.gather` for concurrency).
#[track_caller]
pub fn py_await(awaitable: Py<PyAny>) -> PyAwait {
    PyAwait {
        state: AwaitState::Start(awaitable),
        location: Location::caller(),
    }
}

enum AwaitState {
    Start(Py<PyAny>),
    Waiting(Id),
    Done,
}

/// The future returned by [`py_await`].
#[must_use = "futures do nothing unless awaited"]
pub struct PyAwait {
    state: AwaitState,
    location: &'static Location<'static>,
}

impl Future for PyAwait {
    type Output = PyResult<Py<PyAny>>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let outside = || {
            Poll::Ready(Err(PyRuntimeError::new_err(
                "py_await() polled outside a native coroutine step",
            )))
        };
        // One look-up of the running step, which sets the line and takes
        // the slot.
        match std::mem::replace(&mut this.state, AwaitState::Done) {
            AwaitState::Start(obj) => CURRENT.with(|current| {
                current.with(|running| {
                    let Some(running) = running else {
                        return outside();
                    };
                    let shared = running.user();
                    running.set_line(this.location.line());
                    let io = &shared.io;
                    if let Some(other) = io.request.take() {
                        io.request.set(Some(other));
                        return Poll::Ready(Err(PyRuntimeError::new_err(
                            "a native coroutine can await only one Python awaitable at a time",
                        )));
                    }
                    let id = io.new_id();
                    io.request.set(Some((id, obj)));
                    this.state = AwaitState::Waiting(id);
                    Poll::Pending
                })
            }),
            AwaitState::Waiting(id) => CURRENT.with(|current| {
                current.with(|running| {
                    let Some(running) = running else {
                        return outside();
                    };
                    let io = &running.user().io;
                    match io.reply.take() {
                        Some((rid, result)) if rid == id => Poll::Ready(result.map_err(|e| *e)),
                        other => {
                            io.reply.set(other);
                            this.state = AwaitState::Waiting(id);
                            Poll::Pending
                        }
                    }
                })
            }),
            AwaitState::Done => Poll::Ready(Err(PyRuntimeError::new_err(
                "PyAwait polled after completion",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `coro.send(None)` until it finishes; its return value.
    fn run_to_end(coro: &Bound<'_, PyAny>) -> Py<PyAny> {
        let py = coro.py();
        for _ in 0..100 {
            match coro.call_method1("send", (py.None(),)) {
                Ok(_) => continue,
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                    return e.value(py).getattr("value").unwrap().unbind();
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("did not finish");
    }

    #[repr(align(64))]
    struct Aligned(u64);

    #[test]
    fn inline_boxed_and_overaligned_futures_run() {
        Python::attach(|py| {
            // Inline (small), boxed (large) and boxed (over-aligned) bodies,
            // each suspending once (so the state is read back after a poll).
            let small = NativeCoroutine::new(py, crate::coroutine_def!("small"), async {
                crate::yield_now().await;
                Python::attach(|py| Ok(1u32.into_pyobject(py)?.into_any().unbind()))
            })
            .unwrap();
            let big = [7u8; 4 * INLINE_FUTURE_MAX];
            let large = NativeCoroutine::new(py, crate::coroutine_def!("large"), async move {
                crate::yield_now().await;
                let sum: u32 = big.iter().map(|&b| u32::from(b)).sum();
                Python::attach(|py| Ok(sum.into_pyobject(py)?.into_any().unbind()))
            })
            .unwrap();
            let aligned = Aligned(3);
            let over = NativeCoroutine::new(py, crate::coroutine_def!("over"), async move {
                crate::yield_now().await;
                let v = aligned.0;
                Python::attach(|py| Ok(v.into_pyobject(py)?.into_any().unbind()))
            })
            .unwrap();
            for (coro, want) in [(small, 1u64), (large, 7 * 4 * 256), (over, 3)] {
                let got: u64 = run_to_end(&coro).extract(py).unwrap();
                assert_eq!(got, want);
            }
        });
    }

    #[test]
    fn waker_clone_outlives_the_coroutine() {
        // A clone of the (borrowed, lazy) waker made during a poll is an
        // owned waker of the shared signal: it stays valid after the
        // coroutine is gone.
        let kept: std::sync::Arc<std::sync::Mutex<Option<std::task::Waker>>> = Default::default();
        let k = kept.clone();
        Python::attach(|py| {
            let coro = NativeCoroutine::new(py, crate::coroutine_def!("keep_waker"), async move {
                std::future::poll_fn(|cx| {
                    *k.lock().unwrap() = Some(cx.waker().clone());
                    cx.waker().wake_by_ref();
                    Poll::Ready(())
                })
                .await;
                Ok(Python::attach(|py| py.None()))
            })
            .unwrap();
            run_to_end(&coro);
        });
        let waker = kept.lock().unwrap().take().unwrap();
        std::thread::spawn(move || waker.wake()).join().unwrap();
    }

    /// The native state of a suspended coroutine, part by part (issue 16:
    /// the bytes of the probe's `sleep` against its async def twin,
    /// benches/memory.py); printed with `--nocapture`, and each part held
    /// to what it is now, so that a change that grows one fails here.
    #[test]
    fn state_layout() {
        fn state_of<F>(_: &F) -> usize
        where
            F: Future<Output = PyResult<Py<PyAny>>> + Send + 'static,
        {
            raw::state_size::<Body<F>>()
        }
        fn size_of_val_type<T>(_: &T) -> usize {
            size_of::<T>()
        }
        // The future of pycoro_harness.sleep (rust-harness/pycoro_harness).
        let duration = std::time::Duration::from_secs(3600);
        let result: Option<Py<PyAny>> = std::hint::black_box(None);
        let sleep = async move {
            crate::interruptible(crate::sleep(duration)).await?;
            Ok(result.unwrap_or_else(|| Python::attach(|py| py.None())))
        };
        let (header, held) = raw::state_header_sizes();
        let sizes = [
            ("state header (init, line slot)", header, 8),
            ("held objects", held, 8),
            ("CoroState", size_of::<CoroState>(), 88),
            ("  Io (py_await and wait-point slot)", size_of::<Io>(), 72),
            ("  LazyWaker", size_of::<LazyWaker>(), 8),
            (
                "WakeSignal (heap, once suspended)",
                size_of::<crate::waker::WakeSignal>(),
                40,
            ),
            ("Sleep", size_of::<crate::runtime::Sleep>(), 32),
            ("the sleep future", size_of_val_type(&sleep), 72),
            ("the sleep's native state", state_of(&sleep), 176),
            (
                "an empty future's native state",
                state_of(&async { Ok(Python::attach(|py| py.None())) }),
                112,
            ),
        ];
        for (what, size, _) in sizes {
            eprintln!("{what}: {size} bytes");
        }
        for (what, size, most) in sizes {
            assert!(size <= most, "{what}: {size} bytes, more than {most}");
        }
    }
}
