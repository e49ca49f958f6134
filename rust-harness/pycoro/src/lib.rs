//! # pycoro: Rust futures as true CPython coroutines
//!
//! Built on the patched CPython 3.13.5 of this project, which adds
//! `PyUnstable_Coro_NewNative`: a real `types.CoroutineType` whose frame is
//! a native frame, run by a C step function instead of bytecode.  This crate turns
//! any `Future<Output = PyResult<Py<PyAny>>> + Send + 'static` into such a
//! coroutine ([`NativeCoroutine`]), lets the future await Python awaitables
//! ([`py_await`]), wakes it from any thread ([`runtime`]), and
//! turns panics into `pyo3_runtime.PanicException` ([`mod@panic`]).
//!
//! Layers, from the bottom (the first three are private to the crate):
//! - `ffi`: `pycoro-ffi`'s bindings of the new C API beside `pyo3::ffi`
//!   (the functions found at run time: on a stock CPython the crate loads
//!   and making a native object is a `RuntimeError`); no logic;
//! - `raw`: every `unsafe` block of the crate, each with its `SAFETY`
//!   comment: object creation and the C callbacks of the native frame;
//! - `waker`: the waker of a native coroutine, lock-free when nothing
//!   waits for it (model-checked with `loom`: see `scripts/test`);
//! - the public modules: [`coroutine`], [`mod@function`] (native
//!   coroutine functions without `#[pyfunction]`:
//!   [`coroutine_fn!`](crate::coroutine_fn)), [`runtime`], [`interrupt`],
//!   [`mod@panic`], [`lines`] (the Rust source line a native frame
//!   reports), [`generator`] (Rust iterators as generators), [`stream`]
//!   (Rust streams as async generators).
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
//!
//! # Soundness
//!
//! No safe code can reach undefined behaviour through this crate.  In
//! particular the native state of an object is always written and read
//! with the frame definition of the body type it holds: the definition is
//! derived from that type inside the crate, and the layer that makes
//! objects from a definition is private.  Pairing one body type's
//! definition with another type's value, as the former public
//! `pycoro::raw` allowed (a misaligned or out-of-bounds access in the
//! step), no longer compiles:
//!
//! ```compile_fail,E0603
//! use pyo3::prelude::*;
//! use pycoro::raw::{self, FrameDef, Frame, Kind, NativeBody, Sent, Step};
//! use std::pin::Pin;
//!
//! struct Small(u8);
//! struct Large([u64; 8]);
//! impl NativeBody for Small {
//!     fn step<'py>(self: Pin<&mut Self>, f: &Frame<'_, 'py>, _: Sent<'_, 'py>) -> Step {
//!         Step::Return(f.py().None())
//!     }
//! }
//! impl NativeBody for Large {
//!     fn step<'py>(self: Pin<&mut Self>, f: &Frame<'_, 'py>, _: Sent<'_, 'py>) -> Step {
//!         Step::Return(f.py().None())
//!     }
//! }
//! Python::attach(|py| {
//!     let code = pycoro::coroutine_def!("mixed").code(py).unwrap();
//!     // Large's definition (a 72-byte state) holding a Small body: the
//!     // step then reads a `Large` out of a `Small`'s slot.
//!     let globals = pyo3::types::PyDict::new(py);
//!     let func = raw::new_native_function(&FrameDef::<Large>::DEF, &code, &globals);
//!     let _ = raw::new_native_object(func, Small(1), Vec::new(), Kind::Coroutine);
//! });
//! ```

#![warn(missing_docs)]

pub mod coroutine;
mod ffi;
pub mod function;
pub mod generator;
pub mod interrupt;
pub mod lines;
pub mod panic;
mod raw;
pub mod runtime;
pub mod stream;
mod waker;

pub use coroutine::{CoroutineDef, NativeCoroutine, PyAwait, held, py_await};
pub use function::CoroutineFn;
pub use generator::{GeneratorDef, NativeGenerator};
pub use interrupt::interruptible;
pub use lines::{LineExt, here, located};
pub use runtime::{sleep, yield_now};
pub use stream::NativeAsyncGenerator;
