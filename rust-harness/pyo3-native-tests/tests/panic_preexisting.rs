//! An existing `sys.modules["pyo3_runtime"].PanicException` (made by
//! another extension, or here by Python) is the type PyO3 raises.
use pyo3::prelude::*;
use pyo3_native_tests::run;

#[test]
fn an_existing_panic_exception_is_used_as_is() {
    Python::attach(|py| {
        run(
            py,
            r#"
            import asyncio, sys, types
            m = types.ModuleType("pyo3_runtime")
            class PanicException(BaseException):
                pass
            m.PanicException = PanicException
            sys.modules["pyo3_runtime"] = m
            try:
                asyncio.run(panic("boom"))
            except BaseException as e:
                assert type(e) is PanicException, type(e)
                assert str(e) == "boom"
            else:
                raise AssertionError("no panic")
            "#,
        );
    });
}
