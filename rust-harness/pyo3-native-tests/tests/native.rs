//! The native backend, each behaviour compared with the same program
//! written with `async def` (the twin functions in the Python code).
use pyo3::prelude::*;
use pyo3_native_tests::run;

/// Names shared by the Python snippets: the `async def` twins and drivers.
const PRELUDE: &str = r#"
import asyncio, gc, inspect, sys, traceback, types, warnings

async def ready_twin(value):
    return value

async def fail_twin(message):
    raise ValueError(message)

async def await_it_twin(awaitable):
    return await awaitable

async def await_and_wrap_twin(awaitable):
    try:
        return await awaitable
    except Exception:
        raise ValueError("wrapped")

async def await_twice_twin(a, b):
    return await a + await b

def run_bare(coro):
    """A bare send(None) loop: the result and the number of suspensions."""
    n = 0
    while True:
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value, n
        n += 1
"#;

fn run_native(py: Python<'_>, code: &str) {
    let code = format!(
        "{}\nassert native\n{}",
        PRELUDE,
        pyo3::impl_::unindent::unindent(code)
    );
    run(py, &code);
}

#[test]
fn async_fn_returns_a_true_coroutine() {
    Python::attach(|py| {
        run_native(
            py,
            r#"
            for make in (ready, ready_twin):
                c = make(1)
                assert type(c) is types.CoroutineType, type(c)
                assert inspect.iscoroutine(c) and inspect.isawaitable(c)
                assert c.__name__ == make.__name__
                assert c.cr_frame is not None and c.cr_running is False
                assert asyncio.run(c) == 1
            # a method: qualname Class.method, the frame's code
            c = Counter().incr(2)
            assert type(c) is types.CoroutineType
            assert c.__qualname__ == "Counter.incr", c.__qualname__
            assert asyncio.run(c) == 2
            "#,
        );
    });
}

#[test]
fn the_code_object_shows_the_rust_source() {
    Python::attach(|py| {
        run_native(
            py,
            r#"
            c = ready(None)
            code = c.cr_code
            assert code.co_filename == SOURCE, code.co_filename
            assert code.co_firstlineno == READY_LINE, (code.co_firstlineno, READY_LINE)
            assert code.co_name == "ready" and code.co_qualname == "ready"
            assert code.co_varnames == ("value",) and code.co_argcount == 1, code.co_varnames
            assert c.cr_frame.f_lineno == READY_LINE
            c.close()
            "#,
        );
    });
}

#[test]
fn a_traceback_shows_the_rust_line() {
    Python::attach(|py| {
        run_native(
            py,
            r#"
            def last_frame(make):
                try:
                    asyncio.run(make("boom"))
                except ValueError as e:
                    assert str(e) == "boom"
                    return traceback.extract_tb(e.__traceback__)[-1]
                raise AssertionError("no ValueError")
            native_entry = last_frame(fail)
            twin_entry = last_frame(fail_twin)
            assert (native_entry.filename, native_entry.lineno, native_entry.name) == (
                SOURCE, FAIL_LINE, "fail"), native_entry
            assert twin_entry.name == "fail_twin"
            "#,
        );
    });
}

#[test]
fn runs_under_asyncio_uvloop_trio_anyio_and_a_bare_loop() {
    Python::attach(|py| {
        run_native(
            py,
            r#"
            import anyio, sysconfig, trio
            try:
                import uvloop
            except ImportError:
                # uvloop has no 3.13t build; the default build must have it
                assert sysconfig.get_config_var("Py_GIL_DISABLED"), "uvloop is missing"
                uvloop = None

            async def program(sleep):
                # woken by a Rust thread (native) / the runtime's timer (twin)
                a = await sleep(0.01, "a")
                b = await ready(("b", a))
                return b

            async def sleep_twin(seconds, value):
                await anyio.sleep(seconds)
                return value

            want = ("b", "a")
            for sleep_fn in (sleep, sleep_twin):
                assert asyncio.run(program(sleep_fn)) == want
                if uvloop is not None:
                    assert uvloop.run(program(sleep_fn)) == want
                assert trio.run(program, sleep_fn) == want
                assert anyio.run(program, sleep_fn, backend="asyncio") == want
                assert anyio.run(program, sleep_fn, backend="trio") == want
            # a bare loop: busy-polls until the Rust thread has woken it
            value, n = run_bare(sleep(0.01, "bare"))
            assert value == "bare" and n >= 1, (value, n)
            assert run_bare(ready(5)) == (5, 0)
            assert run_bare(ready_twin(5)) == (5, 0)

            # trio cancellation reaches the native coroutine at its wait
            async def cancelled(sleep_fn):
                with trio.move_on_after(0.01) as scope:
                    await sleep_fn(999, None)
                return scope.cancelled_caught
            assert trio.run(cancelled, sleep) is True
            assert trio.run(cancelled, sleep_twin) is True
            # concurrency: many sleeps woken by many threads
            async def many():
                return await asyncio.gather(*(sleep(0.01, i) for i in range(50)))
            assert asyncio.run(many()) == list(range(50))
            "#,
        );
    });
}

#[test]
fn await_py_gives_results_and_exceptions_as_await_does() {
    Python::attach(|py| {
        run_native(
            py,
            r#"
            async def inner(v):
                await asyncio.sleep(0)
                return v

            for f in (await_it, await_it_twin):
                assert asyncio.run(f(inner(5))) == 5
                assert asyncio.run(f(asyncio.sleep(0, "s"))) == "s"
            for f in (await_twice, await_twice_twin):
                assert asyncio.run(f(inner(2), inner(3))) == 5

            E = KeyError("k")
            async def raiser():
                await asyncio.sleep(0)
                raise E

            def caught(f):
                async def main():
                    try:
                        await f(raiser())
                    except BaseException as e:
                        return e
                return asyncio.run(main())

            for f in (await_it, await_it_twin):
                e = caught(f)
                assert e is E, e
                assert e.__context__ is None
                E.__traceback__ = None
            # a new exception raised after catching the awaitable's
            for f in (await_and_wrap, await_and_wrap_twin):
                e = caught(f)
                assert type(e) is ValueError and str(e) == "wrapped", e
                assert e.__context__ is E, e.__context__
                E.__traceback__ = None

            # while it awaits, cr_await is what it awaits, as in async def
            async def check(f):
                fut = asyncio.get_running_loop().create_future()
                c = f(fut)
                t = asyncio.ensure_future(c)
                await asyncio.sleep(0)
                assert c.cr_await is not None
                if f is await_it:
                    assert c.cr_frame.f_lineno == AWAIT_IT_LINE, (c.cr_frame.f_lineno, AWAIT_IT_LINE)
                fut.set_result(7)
                return await t
            for f in (await_it, await_it_twin):
                assert asyncio.run(check(f)) == 7

            # a cancellation while awaiting reaches the awaited object
            async def cancel_inner(f):
                fut = asyncio.get_running_loop().create_future()
                t = asyncio.ensure_future(f(fut))
                await asyncio.sleep(0)
                t.cancel()
                try:
                    await t
                except asyncio.CancelledError:
                    return fut.cancelled()
            for f in (await_it, await_it_twin):
                assert asyncio.run(cancel_inner(f)) is True

            # a native coroutine awaiting another one
            assert asyncio.run(await_it(await_it(ready(9)))) == 9

            # a future more aligned than the native state (kept boxed)
            c = await_aligned(inner(4))
            assert type(c) is types.CoroutineType
            c.close()
            for f in (await_aligned, await_it_twin):
                assert asyncio.run(f(inner(4))) == 4
                assert run_bare(f(inner(6))) == (6, 1)
                e = caught(f)
                assert e is E, e
                E.__traceback__ = None
            "#,
        );
    });
}

#[test]
fn cancel_handle_receives_the_cancellation() {
    Python::attach(|py| {
        run_native(
            py,
            r#"
            async def main(make):
                t = asyncio.ensure_future(make(999))
                await asyncio.sleep(0)
                t.cancel()
                return await t
            assert asyncio.run(main(cancellable)) == 0
            # finishing normally
            assert asyncio.run(cancellable(0.01)) == 42
            # without a cancel handle the cancellation propagates
            async def plain(seconds):
                return await sleep(seconds, None)
            try:
                asyncio.run(main(plain))
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("not cancelled")
            "#,
        );
    });
}

#[test]
fn a_panic_raises_the_shared_panic_exception() {
    Python::attach(|py| {
        run_native(
            py,
            r#"
            c = panic("boom")
            try:
                asyncio.run(c)
            except BaseException as e:
                err = e
            shared = sys.modules["pyo3_runtime"].PanicException
            assert type(err) is shared, type(err)
            assert str(err) == "boom"
            assert shared.__module__ == "pyo3_runtime" and shared.__name__ == "PanicException"
            assert issubclass(shared, BaseException) and not issubclass(shared, Exception)
            assert "Rust code called from Python panics" in shared.__doc__
            assert isinstance(sys.modules["pyo3_runtime"], types.ModuleType)
            # the finished coroutine, as an async def's
            try:
                c.send(None)
            except RuntimeError as e:
                assert str(e) == "cannot reuse already awaited coroutine"
            "#,
        );
    });
}

#[test]
fn never_awaited_warns_as_async_def_does() {
    Python::attach(|py| {
        run_native(
            py,
            r#"
            def warning_of(make):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    make(1)
                    gc.collect()
                return [(w.category, str(w.message)) for w in caught]
            assert warning_of(ready) == [(RuntimeWarning, "coroutine 'ready' was never awaited")], warning_of(ready)
            assert warning_of(ready_twin) == [(RuntimeWarning, "coroutine 'ready_twin' was never awaited")]
            "#,
        );
    });
}
