//! # pycoro: Rust futures as true CPython coroutines
//!
//! Built on the patched CPython 3.13.5 of this project, which adds
//! `PyCoro_NewNative`: a real `types.CoroutineType` whose frame is a native
//! frame, run by a C step function instead of bytecode.  This crate turns
//! any `Future<Output = PyResult<Py<PyAny>>> + Send + 'static` into such a
//! coroutine ([`NativeCoroutine`]), lets the future await Python awaitables
//! ([`py_await`]), wakes it from any thread ([`waker`], [`runtime`]), and
//! turns panics into `pycoro_runtime.PanicException` ([`mod@panic`]).
//!
//! Layers, from the bottom:
//! - [`ffi`]: bindgen's bindings of the new C API beside `pyo3::ffi`; no
//!   logic;
//! - [`raw`]: every `unsafe` block of the crate, each with its `SAFETY`
//!   comment: object creation and the C callbacks of the native frame;
//! - safe modules: [`coroutine`], [`waker`], [`runtime`], [`mod@panic`],
//!   [`lines`] (the Rust source line a native frame reports), [`generator`]
//!   (Rust iterators as generators), [`stream`] (Rust streams as async
//!   generators).
//!
//! ```
//! use pyo3::prelude::*;
//! use pycoro::{NativeCoroutine, coroutine_def};
//!
//! Python::attach(|py| {
//!     let answer = 42i64.into_pyobject(py).unwrap().into_any().unbind();
//!     let coro = NativeCoroutine::new(py, coroutine_def!("answer"), async move { Ok(answer) })
//!         .unwrap();
//!     let asyncio = py.import("asyncio").unwrap();
//!     let v: i64 = asyncio.call_method1("run", (coro,)).unwrap().extract().unwrap();
//!     assert_eq!(v, 42);
//! });
//! ```

pub mod coroutine;
pub mod ffi;
pub mod generator;
pub mod interrupt;
pub mod lines;
pub mod panic;
pub mod raw;
pub mod runtime;
pub mod stream;
pub mod waker;

pub use coroutine::{CoroutineDef, NativeCoroutine, PyAwait, held, py_await};
pub use generator::{GeneratorDef, NativeGenerator};
pub use interrupt::interruptible;
pub use lines::{LineExt, here, located};
pub use runtime::{sleep, yield_now};
pub use stream::NativeAsyncGenerator;
