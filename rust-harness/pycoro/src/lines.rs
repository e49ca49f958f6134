//! The line a native frame reports: the Rust source line of the current
//! await point, or of the raise, with no boilerplate at the call sites.
//!
//! # How a line gets to Python
//!
//! CPython's side (`PyUnstable_Code_NewNative`) gives the native code
//! object one group of instructions per source line of the function, and a
//! native frame reports a line by pointing its `instr_ptr` into that line's
//! group.  The step does not do that itself: it stores the line into the
//! *line slot* of its state (an `int` at the definition's
//! `lineno_offset`: a plain store, where the former
//! `PyGen_SetNativeLine` call cost about 50 instructions), and CPython
//! moves `instr_ptr` when it needs the line: when the step returns, and
//! when the line of the running frame is read (`f_lineno`, `f_lasti`,
//! tracebacks, warnings, stack walks from code the step calls).  So
//! tracebacks, `frame.f_lineno`, `f_lasti`/`co_lines()`, `sys.monitoring`
//! offsets and out-of-process profilers such as py-spy (which read
//! `instr_ptr` and the line table from memory) all agree on one line; . An
//! out-of-process profiler, which reads `instr_ptr` without asking
//! CPython, sees a line stored *during* a step only once CPython has read
//! the slot (the step returned, or something in the process read the
//! line), except the line of [`here`], which moves `instr_ptr` at once:
//! mark a call into Python that may block with it.
//!
//! This crate records a [`Location`] with `#[track_caller]` wherever the
//! future can suspend or fail, and sets the frame's line *at once* (while
//! the step runs), so Python code called next, a suspension, or an
//! exception leaving the step all see it:
//!
//! | call site (all `#[track_caller]`)              | line recorded               |
//! |------------------------------------------------|-----------------------------|
//! | [`NativeCoroutine::new`](crate::NativeCoroutine::new) / `builder` | before the first poll |
//! | [`py_await`](crate::py_await)`(aw).await`       | when first polled           |
//! | [`yield_now`](crate::yield_now)`().await`, [`sleep`](crate::sleep)`(d).await` | when they return `Pending` |
//! | [`located`]`(any_future).await`                 | at every poll               |
//! | [`here`]`()`                                    | now, `instr_ptr` too (before calling Python) |
//! | [`raise`]`(err)`, `result.`[`at_line`](LineExt::at_line)`()?` | when the error is made / seen |
//!
//! # Which lines a code object spans: `coroutine_def!` and `pycoro-build`
//!
//! A code object's line range is fixed when it is made, but the lines come
//! from `Location`s known only at run time, and a `macro_rules!` macro
//! cannot see where the enclosing `fn` ends.  The span therefore comes from
//! the build: a crate that defines native coroutines calls
//! `pycoro_build::emit_fn_spans()` from its `build.rs` (one line, no
//! attribute on any function).  It parses the crate's `src/**/*.rs` with
//! `syn`, finds every `coroutine_def!` call, and passes the first (`fn`
//! keyword) and last (closing brace) line of the enclosing function to the
//! compiler in the `PYCORO_FN_SPANS` environment variable, which
//! [`coroutine_def!`](crate::coroutine_def) reads with `option_env!`.  So
//! `co_firstlineno` is the line of `fn` (as a Python function's is its
//! `def`), cProfile shows `file.rs:<fn line>(name)`, and every line of the
//! body can be reported.
//!
//! Without that build script (or for a call the parser cannot see, e.g. a
//! `coroutine_def!` inside another macro's arguments), the span starts at
//! the `coroutine_def!` call and covers `nlines` lines (64 unless given).
//!
//! # Limits
//!
//! - A line outside the span is clamped by CPython to the nearest end.
//! - Only lines, no columns: `co_positions()` has no column information.
//! - A `?` that converts a foreign error into `PyErr` cannot be tracked
//!   (`From` for `PyErr` is PyO3's, without `#[track_caller]`): the frame
//!   then shows the last recorded line.  Use `.at_line()?` or [`raise`]
//!   where the raise line matters.
//! - A Rust future that is not wrapped in [`located`] and is not one of
//!   this crate's suspends at the line recorded last (often the previous
//!   `await` point).
//! - No `line` events: the frame never executes its bytecode, so
//!   `sys.settrace` sees `call`/`return`/`exception` but no `line`, and
//!   debuggers cannot step or jump inside the native body.
//!
//! ```
//! use pyo3::prelude::*;
//! use pycoro::{NativeCoroutine, coroutine_def, lines};
//!
//! Python::attach(|py| {
//!     let raise_line = line!() + 2;
//!     let coro = NativeCoroutine::new(py, coroutine_def!("bad"), async {
//!         lines::raise(pyo3::exceptions::PyValueError::new_err("bad"))
//!     })
//!     .unwrap();
//!     let err = coro.call_method1("send", (py.None(),)).unwrap_err();
//!     // The traceback's entry for the native frame is the line of `raise`.
//!     let tb = err.traceback(py).unwrap();
//!     assert_eq!(tb.getattr("tb_lineno").unwrap().extract::<u32>().unwrap(), raise_line);
//! });
//! ```

use std::future::Future;
use std::panic::Location;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use pyo3::prelude::*;

/// Set the line of the running native frame to `line` (no-op outside a
/// step).  Never fails: a line outside the code's span is clamped by
/// CPython.
pub(crate) fn set_line(line: u32) {
    crate::coroutine::set_current_line(line);
}

/// Record `location` as the current line of the running native frame.
pub(crate) fn record(location: &'static Location<'static>) {
    set_line(location.line());
}

/// Mark the caller's line as the current line of the native frame whose
/// step is running (no-op anywhere else): Python code called next sees it
/// in `sys._getframe(1).f_lineno`, and an exception leaving the step gets
/// it in its traceback.  Unlike the other markers it also moves the
/// frame's `instr_ptr` at once (`PyUnstable_Gen_SetNativeLine`, about 50
/// instructions rather than a store), so that an out-of-process profiler
/// sampling while the code called next runs sees the line too.
#[track_caller]
pub fn here() {
    crate::coroutine::publish_current_line(Location::caller().line());
}

/// `Err(err)`, with the caller's line recorded as the raise site:
/// `return lines::raise(PyValueError::new_err("..."))`.
#[track_caller]
pub fn raise<T>(err: impl Into<PyErr>) -> PyResult<T> {
    record(Location::caller());
    Err(err.into())
}

/// Record the caller's line if a result is an error: `call()?` becomes
/// `call().at_line()?`, and the traceback entry of the native frame shows
/// the line of that `?`.
pub trait LineExt {
    /// `self`, after recording the caller's line if it is an error.
    #[track_caller]
    fn at_line(self) -> Self;
}

impl<T> LineExt for PyResult<T> {
    #[track_caller]
    fn at_line(self) -> Self {
        if self.is_err() {
            record(Location::caller());
        }
        self
    }
}

/// Wrap any future so that the native frame reports the line of this call
/// while the future runs and when it suspends the coroutine:
/// `located(tokio_thing()).await`.
#[track_caller]
pub fn located<F: Future>(future: F) -> Located<F> {
    Located {
        future: Box::pin(future),
        location: Location::caller(),
    }
}

/// The future returned by [`located`].
#[must_use = "futures do nothing unless awaited"]
pub struct Located<F> {
    future: Pin<Box<F>>,
    location: &'static Location<'static>,
}

impl<F: Future> Future for Located<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        record(self.location);
        self.future.as_mut().poll(cx)
    }
}

/// The span of the function around a `coroutine_def!` call, from the
/// `PYCORO_FN_SPANS` table that `pycoro_build::emit_fn_spans()` makes:
/// entries `path:macro_line:first:last` separated by `;`, `path` relative
/// to the crate root.  Returns `(first, last)`.
pub(crate) fn fn_span(table: Option<&str>, file: &str, macro_line: u32) -> Option<(u32, u32)> {
    let file = Path::new(file);
    table?.split(';').find_map(|entry| {
        let mut parts = entry.rsplitn(4, ':');
        let last: u32 = parts.next()?.parse().ok()?;
        let first: u32 = parts.next()?.parse().ok()?;
        let line: u32 = parts.next()?.parse().ok()?;
        let path = parts.next()?;
        // The call is inside the function (`coroutine_def!`), or the
        // function inside the call (`coroutine_fn!`, whose line is before
        // the `fn`'s).
        (line == macro_line && file.ends_with(path) && macro_line <= last).then_some((first, last))
    })
}

#[cfg(test)]
mod tests {
    use super::fn_span;

    #[test]
    fn span_lookup() {
        let table = "src/lib.rs:12:10:30;src/other.rs:12:5:40;src/lib.rs:50:48:60";
        assert_eq!(
            fn_span(Some(table), "crates/x/src/lib.rs", 12),
            Some((10, 30))
        );
        assert_eq!(fn_span(Some(table), "src/other.rs", 12), Some((5, 40)));
        assert_eq!(fn_span(Some(table), "src/lib.rs", 50), Some((48, 60)));
        // Not a component-wise suffix, unknown line, no table.
        assert_eq!(fn_span(Some(table), "src/mylib.rs", 12), None);
        assert_eq!(fn_span(Some(table), "src/lib.rs", 13), None);
        assert_eq!(fn_span(None, "src/lib.rs", 12), None);
        assert_eq!(fn_span(Some(""), "src/lib.rs", 12), None);
    }
}
