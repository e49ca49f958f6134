//! Raw C declarations: the native-frame API of the patched CPython, from
//! `pycoro-ffi` (hand-written from `Include/cpython/genobject.h` and
//! `code.h`, detected at build time, its functions resolved at run time:
//! see `crate::raw::native_api`), beside everything `pyo3-ffi` declares.
//! No logic lives here; see `crate::raw` for the checked wrappers.
//! Private to the crate.
#![allow(unused_imports, unreachable_pub)]

pub use pycoro_ffi::*;
pub use pyo3::ffi::*;
