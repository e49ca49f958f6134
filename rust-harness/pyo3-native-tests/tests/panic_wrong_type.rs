//! An existing `sys.modules["pyo3_runtime"].PanicException` that is not a
//! `BaseException` subclass is refused with `TypeError` (reported, as a
//! failed creation of the type is, by the panic of its initialization).
use pyo3::panic::PanicException;
use pyo3::prelude::*;

#[test]
fn a_wrong_panic_exception_is_a_type_error() {
    Python::attach(|py| {
        py.run(
            c"import sys, types\nm = types.ModuleType('pyo3_runtime')\nm.PanicException = 42\nsys.modules['pyo3_runtime'] = m",
            None,
            None,
        )
        .unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            py.get_type::<PanicException>();
        }));
        let payload = caught.expect_err("the type object was made");
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("TypeError"), "{message}");
        assert!(
            message.contains("not a subclass of BaseException"),
            "{message}"
        );
    });
}
