//! On the free-threaded build (3.13t): importing a module that declares
//! `gil_used = false` keeps the GIL off, and its `async fn`s are native
//! coroutines; a module that does not declare it turns the GIL on (the
//! control: the check this test relies on is active).  On the default
//! build there is no GIL to keep off: the test checks the import only.
use pyo3::prelude::*;
use pyo3_native_tests::run;

#[pymodule(gil_used = false)]
fn pyo3_native_ft(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pyo3_native_tests::ready, m)?)
}

#[pymodule(gil_used = true)]
fn pyo3_native_gil(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pyo3_native_tests::ready, m)?)
}

#[test]
fn importing_a_gil_free_module_keeps_the_gil_off() {
    pyo3::append_to_inittab!(pyo3_native_ft);
    pyo3::append_to_inittab!(pyo3_native_gil);
    Python::attach(|py| {
        run(
            py,
            r#"
            import asyncio, sys, sysconfig, types, warnings
            free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
            if free_threaded:
                assert not sys._is_gil_enabled()
            import pyo3_native_ft
            if free_threaded:
                assert not sys._is_gil_enabled(), "importing pyo3_native_ft enabled the GIL"
            c = pyo3_native_ft.ready(1)
            assert type(c) is types.CoroutineType
            assert asyncio.run(c) == 1
            if free_threaded:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    import pyo3_native_gil
                assert sys._is_gil_enabled(), "the control module did not enable the GIL"
            "#,
        );
    });
}
