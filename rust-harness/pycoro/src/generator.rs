//! Rust iterators as true CPython generators.
//!
//! [`NativeGenerator::new`] wraps any
//! `Iterator<Item = PyResult<Py<PyAny>>> + Send + 'static` in an object for
//! which `type(g) is types.GeneratorType`: CPython's own generator type,
//! whose frame is a native frame (made by `PyUnstable_Gen_NewNative`).  `for`,
//! `list()`, `next()`, `yield from`, `send`/`throw`/`close`, `gi_frame`,
//! `gi_running`, `gi_suspended`, "generator already executing" and the
//! interpreter's `FOR_ITER`/`SEND` paths are CPython's own machinery.
//!
//! # One step
//!
//! Each resumption calls `next()` on the iterator (under `catch_unwind`):
//! `Some(Ok(v))` yields `v`, `Some(Err(e))` raises `e` (as `raise e`), and
//! `None` returns `None` (`StopIteration`).  A value passed to `send()` is
//! ignored (a Rust iterator has nowhere to receive it, as a `for` loop
//! sends nothing).  An exception thrown in (`throw()`, or the
//! `GeneratorExit` of `close()`) cannot be caught by an iterator: it
//! propagates at once and the iterator is dropped (its `Drop` runs), as in
//! a generator suspended outside any `try`.  A panic in `next()` becomes
//! `pyo3_runtime.PanicException` and finishes the generator.
//!
//! [`GeneratorDef`] describes the code object (file, name, lines), as
//! [`CoroutineDef`] does for coroutines; make one with
//! [`generator_def!`](crate::generator_def) (or
//! [`async_generator_def!`](crate::async_generator_def) for
//! [`crate::stream`]).
//!
//! ```
//! use pyo3::prelude::*;
//! use pycoro::{NativeGenerator, generator_def};
//!
//! Python::attach(|py| {
//!     let g = NativeGenerator::from_iter(py, generator_def!("squares"), (0..4).map(|i| i * i))
//!         .unwrap();
//!     let types = py.import("types").unwrap();
//!     assert!(g.get_type().is(&types.getattr("GeneratorType").unwrap()));
//!     let items: Vec<i64> = py
//!         .import("builtins")
//!         .unwrap()
//!         .getattr("list")
//!         .unwrap()
//!         .call1((g,))
//!         .unwrap()
//!         .extract()
//!         .unwrap();
//!     assert_eq!(items, [0, 1, 4, 9]);
//! });
//! ```

use std::pin::Pin;

use pyo3::BoundObject;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::coroutine::CoroutineDef;
use crate::raw::{
    self, CodeAndGlobals, Frame, FrameDef, FunctionCache, Kind, NativeBody, Sent, Step,
};

/// The static description of one native generator or async generator
/// "def": a [`CoroutineDef`] (file, name, lines, globals) and the kind of
/// its code object, with that code object and the native functions made
/// from it cached (one per body type, usually one).  Make one per
/// Rust function with [`generator_def!`](crate::generator_def) or
/// [`async_generator_def!`](crate::async_generator_def).
pub struct GeneratorDef {
    base: &'static CoroutineDef,
    kind: Kind,
    code: PyOnceLock<Py<PyAny>>,
    functions: FunctionCache,
}

impl GeneratorDef {
    const fn new(base: &'static CoroutineDef, kind: Kind) -> Self {
        Self {
            base,
            kind,
            code: PyOnceLock::new(),
            functions: FunctionCache::new(),
        }
    }

    /// A native generator def (for [`NativeGenerator`]) described by
    /// `base`: what [`generator_def!`](crate::generator_def) makes.
    pub const fn generator(base: &'static CoroutineDef) -> Self {
        Self::new(base, Kind::Generator)
    }

    /// A native async generator def (for
    /// [`NativeAsyncGenerator`](crate::NativeAsyncGenerator)) described by
    /// `base`: what [`async_generator_def!`](crate::async_generator_def)
    /// makes.
    pub const fn async_generator(base: &'static CoroutineDef) -> Self {
        Self::new(base, Kind::AsyncGenerator)
    }

    /// The description of the code object (as a [`CoroutineDef`], which
    /// also makes the coroutines that produce an async generator's items).
    pub(crate) fn base(&self) -> &'static CoroutineDef {
        self.base
    }

    /// The `co_name` of the code object.
    pub fn name(&self) -> &'static str {
        self.base.name()
    }

    /// The native code object of this def's kind (made once, then cached
    /// for the process): the file, names and lines of the base's
    /// coroutine code.
    pub fn code<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.code_and_globals(py).map(|(code, _)| code)
    }

    /// The code object and the frame's globals (the base's), cached.
    pub(crate) fn code_and_globals<'py>(&self, py: Python<'py>) -> PyResult<CodeAndGlobals<'py>> {
        let (_, globals) = self.base.code_and_globals(py)?;
        let code = self.code.get_or_try_init(py, || {
            let base = self.base;
            let (firstlineno, nlines) = base.lines();
            raw::new_native_code(
                py,
                &base.filename(),
                base.name(),
                base.qualname(),
                firstlineno,
                nlines,
                self.kind,
            )
            .map(Bound::unbind)
        })?;
        Ok((code.bind(py).clone(), globals))
    }

    /// A new object of this def's kind with `body` in its state.
    pub(crate) fn new_object<'py, B: NativeBody>(
        &self,
        py: Python<'py>,
        body: B,
    ) -> PyResult<Bound<'py, PyAny>> {
        let code = || self.code_and_globals(py);
        raw::new_native_object(py, &self.functions, code, body, Vec::new(), self.kind)
    }
}

/// Make a `&'static` [`GeneratorDef`] of a native generator for the
/// enclosing Rust function: `generator_def!("name")` or
/// `generator_def!("name", nlines = 40)`; the module, file and lines are
/// those [`coroutine_def!`](crate::coroutine_def) finds (it makes the
/// base).
#[macro_export]
macro_rules! generator_def {
    ($name:literal) => {
        $crate::generator_def!($name, nlines = 64)
    };
    ($name:literal, nlines = $nlines:expr) => {{
        static DEF: $crate::GeneratorDef =
            $crate::GeneratorDef::generator($crate::coroutine_def!($name, nlines = $nlines));
        &DEF
    }};
}

/// Make a `&'static` [`GeneratorDef`] of a native async generator (see
/// [`crate::stream`]), as [`generator_def!`](crate::generator_def) does.
#[macro_export]
macro_rules! async_generator_def {
    ($name:literal) => {
        $crate::async_generator_def!($name, nlines = 64)
    };
    ($name:literal, nlines = $nlines:expr) => {{
        static DEF: $crate::GeneratorDef =
            $crate::GeneratorDef::async_generator($crate::coroutine_def!($name, nlines = $nlines));
        &DEF
    }};
}

/// The body stored in the generator's native state: the function that
/// makes the next item, inline (or boxed if it is over-aligned for the
/// state).
struct FnBody<G> {
    next: G,
}

// The function is never pinned (it is called through `&mut`).
impl<G> Unpin for FnBody<G> {}

impl<G> NativeBody for FnBody<G>
where
    G: FnMut(Python<'_>) -> Option<PyResult<Py<PyAny>>> + Send + 'static,
{
    fn step<'py>(self: Pin<&mut Self>, frame: &Frame<'_, 'py>, sent: Sent<'_, 'py>) -> Step {
        let py = frame.py();
        if let Err(e) = sent {
            // throw() or close(): nothing in an iterator can catch it.
            return Step::Error(e);
        }
        // A panic here is caught by the step (`raw`), raised as
        // `PanicException`, and finishes the generator.
        match (Pin::into_inner(self).next)(py) {
            Some(Ok(v)) => Step::Yield(v),
            Some(Err(e)) => Step::Raise(e),
            None => Step::Return(py.None()),
        }
    }
}

/// The boxed item function of an over-aligned one.
type BoxFn = Box<dyn FnMut(Python<'_>) -> Option<PyResult<Py<PyAny>>> + Send + 'static>;

/// Namespace of the constructors of native generators.
pub struct NativeGenerator;

impl NativeGenerator {
    /// A true generator (`types.GeneratorType`) yielding the items of
    /// `iter`; an `Err` item is raised and finishes it.  `def` must come
    /// from [`generator_def!`](crate::generator_def) (`TypeError` for an
    /// async generator def).
    #[allow(clippy::new_ret_no_self)] // a Python object, not a Rust value
    pub fn new<'py, I>(
        py: Python<'py>,
        def: &'static GeneratorDef,
        mut iter: I,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        I: Iterator<Item = PyResult<Py<PyAny>>> + Send + 'static,
    {
        Self::from_fn(py, def, move |_| iter.next())
    }

    /// A true generator whose items are made by `next`, called with the
    /// GIL token of each step: `Some(Ok(v))` yields `v`, `Some(Err(e))`
    /// raises `e` and `None` ends it, as the items of an iterator given to
    /// [`new`](Self::new) do.
    ///
    /// ```
    /// use pyo3::prelude::*;
    /// use pycoro::{NativeGenerator, generator_def};
    ///
    /// Python::attach(|py| {
    ///     let mut i = 0u32;
    ///     let g = NativeGenerator::from_fn(py, generator_def!("upto3"), move |py| {
    ///         i += 1;
    ///         (i <= 3).then(|| Ok(i.into_pyobject(py).unwrap().into_any().unbind()))
    ///     })
    ///     .unwrap();
    ///     let items: Vec<u32> = py
    ///         .import("builtins").unwrap().getattr("list").unwrap()
    ///         .call1((g,)).unwrap().extract().unwrap();
    ///     assert_eq!(items, [1, 2, 3]);
    /// });
    /// ```
    pub fn from_fn<'py, G>(
        py: Python<'py>,
        def: &'static GeneratorDef,
        next: G,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        G: FnMut(Python<'_>) -> Option<PyResult<Py<PyAny>>> + Send + 'static,
    {
        if FrameDef::<FnBody<G>>::FITS {
            def.new_object(py, FnBody { next })
        } else {
            let next: BoxFn = Box::new(next);
            def.new_object(py, FnBody { next })
        }
    }

    /// [`new`](Self::new) for an iterator of plain Rust values, each
    /// converted to a Python object as it is yielded.
    pub fn from_iter<'py, I>(
        py: Python<'py>,
        def: &'static GeneratorDef,
        iter: I,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: for<'a> IntoPyObject<'a>,
    {
        let mut iter = iter.into_iter();
        Self::from_fn(py, def, move |py| {
            let item = iter.next()?;
            Some(
                item.into_pyobject(py)
                    .map(|obj| obj.into_any().unbind())
                    .map_err(Into::into),
            )
        })
    }
}
