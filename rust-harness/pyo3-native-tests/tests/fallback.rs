//! `PYCORO_NATIVE_FRAMES=0`: the same functions fall back to PyO3's own
//! `Coroutine` on the patched interpreter (what a wheel gets on stock
//! CPython), and `await_py` still works there.
use pyo3::prelude::*;
use pyo3_native_tests::run;

#[test]
fn without_the_api_async_fn_returns_pyo3s_coroutine() {
    // SAFETY: set before the first use of the API and of the interpreter,
    // in this test binary's only test.
    unsafe { std::env::set_var("PYCORO_NATIVE_FRAMES", "0") };
    assert!(pycoro_ffi::api().is_none());
    Python::attach(|py| {
        run(
            py,
            r#"
            import asyncio, sys, types
            assert not native
            c = ready(1)
            assert type(c) is not types.CoroutineType
            assert type(c).__name__ == "Coroutine", type(c)
            assert asyncio.run(c) == 1
            assert asyncio.run(sleep(0.01, "s")) == "s"

            async def inner(v):
                await asyncio.sleep(0)
                return v
            assert asyncio.run(await_it(inner(5))) == 5
            assert asyncio.run(await_twice(inner(2), inner(3))) == 5
            assert asyncio.run(await_it(asyncio.sleep(0, "x"))) == "x"

            E = KeyError("k")
            async def raiser():
                await asyncio.sleep(0)
                raise E
            async def main(f):
                try:
                    await f(raiser())
                except BaseException as e:
                    return e
            assert asyncio.run(main(await_it)) is E
            e = asyncio.run(main(await_and_wrap))
            assert type(e) is ValueError and str(e) == "wrapped"
            # chained to the awaitable's exception, as in an async def
            assert e.__context__ is E, e.__context__

            async def cancel(make):
                t = asyncio.ensure_future(make(999))
                await asyncio.sleep(0)
                t.cancel()
                return await t
            assert asyncio.run(cancel(cancellable)) == 0

            try:
                asyncio.run(panic("boom"))
            except BaseException as e:
                assert type(e) is sys.modules["pyo3_runtime"].PanicException
                assert str(e) == "boom"
            "#,
        );
    });
}
