//! Native coroutine functions: the Python callable itself made by pycoro,
//! without pyo3's `#[pyfunction]` machinery.
//!
//! [`coroutine_fn!`](crate::coroutine_fn) defines a function of fixed
//! positional-or-keyword parameters, all required, whose body makes the
//! future; calling it from Python binds the arguments as the same
//! `async def` binds them (the same `TypeError` messages) and returns a
//! true coroutine, and the body runs at the coroutine's first step, as an
//! `async def` body does (a `#[pyfunction]` over [`NativeCoroutine::new`]
//! runs the Rust function, its argument conversions and whatever comes
//! before the `async` block at the call).  It is the cheaper way into a
//! native coroutine: the call costs about what the C floor's `METH_O`
//! function costs (benches/analysis.md, "The harness, stop 14").
//!
//! ```
//! use pyo3::prelude::*;
//!
//! pycoro::coroutine_fn! {
//!     /// `async def add(a, b): return a + b`
//!     fn add(a, b) {
//!         async move { Python::attach(|py| Ok(a.bind(py).add(b.bind(py))?.unbind())) }
//!     }
//! }
//!
//! Python::attach(|py| {
//!     let m = pyo3::types::PyModule::new(py, "demo").unwrap();
//!     add::add_to(&m).unwrap();
//!     let asyncio = py.import("asyncio").unwrap();
//!     let coro = m.getattr("add").unwrap().call1((2, 3)).unwrap();
//!     let v: i64 = asyncio.call_method1("run", (coro,)).unwrap().extract().unwrap();
//!     assert_eq!(v, 5);
//!     let err = m.getattr("add").unwrap().call1((2,)).unwrap_err();
//!     assert_eq!(
//!         err.value(py).to_string(),
//!         "add() missing 1 required positional argument: 'b'"
//!     );
//! });
//! ```
//!
//! [`NativeCoroutine::new`]: crate::NativeCoroutine::new

use std::ffi::CStr;
use std::future::Future;

use pyo3::prelude::*;
use pyo3::types::PyCFunction;

use crate::coroutine::{self, CoroutineDef};
use crate::raw::{self, Kind};

/// What the future of a native coroutine resolves to.
pub type Output = PyResult<Py<PyAny>>;

/// A native coroutine function of `N` parameters; implemented by
/// [`coroutine_fn!`](crate::coroutine_fn), which is the way to write one.
pub trait CoroutineFn<const N: usize>: Sized + 'static {
    /// `__name__` (and the code object's `co_name`).
    const NAME: &'static CStr;
    /// `__doc__`, starting with the `__text_signature__` line.
    const DOC: &'static CStr;
    /// The parameter names, in order.
    const PARAMS: [&'static str; N];
    /// The code object's description.
    fn def() -> &'static CoroutineDef;
    /// The body: the future the coroutine runs, from the bound arguments;
    /// called at the coroutine's first step.
    fn body(args: [Py<PyAny>; N]) -> impl Future<Output = Output> + Send + 'static;
}

/// The function object of `T`, for `module`.
pub fn wrap<'py, T: CoroutineFn<N>, const N: usize>(
    module: &Bound<'py, PyModule>,
) -> PyResult<Bound<'py, PyCFunction>> {
    raw::new_coroutine_function::<T, N>(module)
}

/// Add the function object of `T` to `module` under its name.
pub fn add<T: CoroutineFn<N>, const N: usize>(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add(T::NAME.to_string_lossy().as_ref(), wrap::<T, N>(module)?)
}

/// The coroutine of one call of `T` (for the C function of `T`, in
/// `raw`): run without pyo3 counting the thread as attached, so it makes
/// the `Py<PyAny>` arguments only inside the body closure, which
/// `new_native_object_uncounted` calls once the object exists.
#[inline(always)]
pub(crate) fn make<'py, T: CoroutineFn<N>, const N: usize>(
    py: Python<'py>,
    args: [Borrowed<'_, 'py, PyAny>; N],
) -> PyResult<Bound<'py, PyAny>> {
    let def = T::def();
    let code = || def.code_and_globals(py);
    // Until its first await point the frame reports its first line (the
    // `fn`'s, `co_firstlineno`), which is what a line slot of 0 reports:
    // nothing to store, and CPython has no line to move to after the step.
    let first_line = 0;
    // Called inside `make_body`: the arguments become owned references
    // once the object exists; the body is made at the first poll, which
    // then polls the future it returns.
    let future = move || {
        let args = args.map(|a| a.to_owned().unbind());
        async move { T::body(args).await }
    };
    if inline(&future) {
        let make_body = move || coroutine::body(first_line, future());
        raw::new_native_object_uncounted(py, def.functions(), code, make_body, Kind::Coroutine)
    } else {
        let make_body = move || coroutine::body(first_line, coroutine::boxed(future()));
        raw::new_native_object_uncounted(py, def.functions(), code, make_body, Kind::Coroutine)
    }
}

/// Whether the future `make()` returns is kept inline in the object (see
/// `coroutine::fits_inline`).
#[inline(always)]
fn inline<F: Future<Output = Output> + Send + 'static>(_make: &impl FnOnce() -> F) -> bool {
    coroutine::fits_inline::<F>()
}

/// Define a native coroutine function (see [`mod@crate::function`]):
///
/// ```text
/// coroutine_fn! {
///     /// doc
///     pub fn name(param, ...) { /* an expression of a future */ }
/// }
/// ```
///
/// makes a unit type `name` implementing [`CoroutineFn`], with
/// `name::add_to(module)` to add the function to a module.  Each parameter
/// is a `Py<PyAny>` in the body, which must evaluate to a
/// `Future<Output = PyResult<Py<PyAny>>> + Send + 'static` (usually an
/// `async move` block); it runs at the coroutine's first step.
#[macro_export]
macro_rules! coroutine_fn {
    (
        $(#[doc = $doc:literal])*
        $vis:vis fn $name:ident($($param:ident),* $(,)?) $body:block
    ) => {
        $(#[doc = $doc])*
        #[allow(non_camel_case_types)]
        $vis struct $name;

        impl $name {
            const ARITY: usize = {
                let params: &[&str] = &[$(stringify!($param)),*];
                params.len()
            };

            /// Add this function to `module` under its name.
            #[allow(dead_code)]
            $vis fn add_to(
                module: &$crate::function::__private::Bound<'_, $crate::function::__private::PyModule>,
            ) -> $crate::function::__private::PyResult<()> {
                $crate::function::add::<Self, { $name::ARITY }>(module)
            }
        }

        impl $crate::function::CoroutineFn<{ $name::ARITY }> for $name {
            const NAME: &'static ::core::ffi::CStr =
                match ::core::ffi::CStr::from_bytes_with_nul(
                    concat!(stringify!($name), "\0").as_bytes(),
                ) {
                    Ok(name) => name,
                    Err(_) => panic!("a function name has no NUL"),
                };
            const DOC: &'static ::core::ffi::CStr =
                match ::core::ffi::CStr::from_bytes_with_nul(
                    concat!(
                        stringify!($name),
                        "(",
                        $crate::__params!($($param),*),
                        ")\n--\n\n",
                        $($doc, "\n",)*
                        "\0"
                    )
                    .as_bytes(),
                ) {
                    Ok(doc) => doc,
                    Err(_) => panic!("a doc comment has no NUL"),
                };
            const PARAMS: [&'static str; { $name::ARITY }] = [$(stringify!($param)),*];

            fn def() -> &'static $crate::CoroutineDef {
                static DEF: $crate::CoroutineDef = $crate::CoroutineDef::new(
                    module_path!(),
                    stringify!($name),
                    stringify!($name),
                    file!(),
                    env!("CARGO_MANIFEST_DIR"),
                    line!(),
                    64,
                    option_env!("PYCORO_FN_SPANS"),
                );
                &DEF
            }

            #[allow(unused_variables)]
            fn body(
                [$($param),*]: [$crate::function::__private::Py<$crate::function::__private::PyAny>; { $name::ARITY }],
            ) -> impl ::core::future::Future<Output = $crate::function::Output> + Send + 'static {
                $body
            }
        }
    };
}

/// The parameter list of a text signature: `a, b, c`.
#[doc(hidden)]
#[macro_export]
macro_rules! __params {
    () => { "" };
    ($first:ident $(, $rest:ident)*) => {
        concat!(stringify!($first) $(, ", ", stringify!($rest))*)
    };
}

/// What [`coroutine_fn!`](crate::coroutine_fn) expands to refers to
/// (pyo3's types, through pycoro, so the calling crate needs no `pyo3` of
/// its own name).
#[doc(hidden)]
pub mod __private {
    pub use pyo3::types::PyModule;
    pub use pyo3::{Bound, Py, PyAny, PyResult};
}
