//! Criterion microbenchmarks of the harness's own overhead, on the patched
//! interpreter (embedded, as in the crate's tests):
//!
//! - `waker/*`: the `Waker` of a native coroutine (an owned clone, as a
//!   future that keeps its waker has): clone + drop, `wake_by_ref` with
//!   nothing armed (the lock-free path; the armed path and the per-poll
//!   reset are internal, covered by the crate's unit tests and its `loom`
//!   model);
//! - `poll/*`: one step of a native coroutine through CPython
//!   (`PyIter_Send` -> `_PyEval_EvalNativeFrame` -> the harness's step ->
//!   the future's `poll`): a coroutine that completes at once (create +
//!   first step + completion) and one bare-yield step of a long-lived one;
//! - `panic/*`: `catch_unwind` around a poll that does not panic (what every
//!   step pays), and turning a caught panic into `PanicException` (the whole
//!   step of a panicking coroutine).
//!
//! ```sh
//! cargo bench -p pycoro --bench harness            # all
//! cargo bench -p pycoro --bench harness -- waker   # a group
//! ```
//!
//! `cargo test`/`clippy --all-targets` build this file but do not run it.

use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use pycoro::{NativeCoroutine, coroutine_def};
use pyo3::ffi;
use pyo3::prelude::*;

/// `PyIter_Send(coro, None)`: what an `await` or a Task step does, without
/// the attribute lookup and call of `coro.send(None)`.
fn send_none(coro: &Bound<'_, PyAny>) -> (ffi::PySendResult, Option<Py<PyAny>>) {
    let py = coro.py();
    let mut out: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: the GIL is held (`Bound`); `coro` is a live coroutine, which
    // implements am_send; `Py_None` is borrowed for the call; `out` receives
    // a new reference (the yielded/returned value) or NULL with an
    // exception set, which we own from here on.
    let r = unsafe { ffi::PyIter_Send(coro.as_ptr(), ffi::Py_None(), &mut out) };
    // SAFETY: `out` is a new reference or NULL (see above).
    let value = unsafe { Bound::from_owned_ptr_or_opt(py, out) }.map(Bound::unbind);
    if r == ffi::PySendResult::PYGEN_ERROR {
        drop(PyErr::take(py));
    }
    (r, value)
}

/// An owned waker of a native coroutine (a clone of the one its poll
/// got), kept after the coroutine finished.
fn coroutine_waker() -> Waker {
    let kept: Arc<Mutex<Option<Waker>>> = Arc::default();
    let k = kept.clone();
    Python::attach(|py| {
        let none = py.None();
        let coro = NativeCoroutine::new(py, coroutine_def!("keep_waker"), async move {
            std::future::poll_fn(|cx| {
                *k.lock().unwrap() = Some(cx.waker().clone());
                Poll::Ready(())
            })
            .await;
            Ok(none)
        })
        .unwrap();
        let (r, _) = send_none(&coro);
        assert_eq!(r, ffi::PySendResult::PYGEN_RETURN);
    });
    let waker = kept.lock().unwrap().take();
    waker.expect("the poll kept its waker")
}

fn waker(c: &mut Criterion) {
    let mut g = c.benchmark_group("waker");
    let waker = coroutine_waker();
    g.bench_function("clone_drop", |b| b.iter(|| drop(black_box(waker.clone()))));
    // Nothing is armed (the coroutine is gone): the flag store, the fence
    // and the load of `armed`, no lock.
    g.bench_function("wake_by_ref_unarmed", |b| {
        b.iter(|| black_box(&waker).wake_by_ref())
    });
    g.finish();
}

fn poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("poll");
    Python::attach(|py| {
        g.bench_function("create_and_complete", |b| {
            b.iter(|| {
                let none = py.None();
                let coro =
                    NativeCoroutine::new(py, coroutine_def!("ready"), async move { Ok(none) })
                        .unwrap();
                let (r, _) = send_none(&coro);
                assert_eq!(r, ffi::PySendResult::PYGEN_RETURN);
            })
        });
        let coro = NativeCoroutine::new(py, coroutine_def!("spin"), async {
            loop {
                pycoro::yield_now().await;
            }
        })
        .unwrap();
        g.bench_function("bare_yield_step", |b| {
            b.iter(|| {
                let (r, _) = send_none(&coro);
                assert_eq!(r, ffi::PySendResult::PYGEN_NEXT);
            })
        });
        // Leave the spinning coroutine closed, not pending.
        coro.call_method0("close").unwrap();
    });
    g.finish();
}

fn panics(c: &mut Criterion) {
    let mut g = c.benchmark_group("panic");
    let waker = Waker::noop();
    g.bench_function("catch_unwind_no_panic", |b| {
        let mut fut = std::pin::pin!(std::future::ready(1u32));
        b.iter(|| {
            let mut cx = Context::from_waker(waker);
            // The future is done after its first poll: poll a fresh
            // `ready` each time, as the step does with the body's future.
            fut.set(std::future::ready(black_box(1)));
            let r = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
            matches!(r, Ok(Poll::Ready(1)))
        })
    });
    // A panicking body runs the panic hook; silence it for the benchmark.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    Python::attach(|py| {
        g.bench_function("panic_to_pyerr", |b| {
            b.iter(|| pycoro::panic::panic_to_pyerr(py, Box::new(black_box("boom"))))
        });
        g.bench_function("panicking_step", |b| {
            b.iter(|| {
                let coro = NativeCoroutine::new(py, coroutine_def!("boom"), async {
                    if black_box(true) {
                        panic!("boom");
                    }
                    Ok(Python::attach(|py| py.None()))
                })
                .unwrap();
                let (r, _) = send_none(&coro);
                assert_eq!(r, ffi::PySendResult::PYGEN_ERROR);
            })
        });
    });
    std::panic::set_hook(hook);
    g.finish();
}

criterion_group!(benches, waker, poll, panics);
criterion_main!(benches);
