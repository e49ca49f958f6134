//! `PYCORO_NATIVE_FRAMES=0` makes `api()` report the API absent, even on
//! the patched interpreter (its own test binary: the answer is cached for
//! the process on the first call).

#[test]
fn the_environment_variable_forces_absent() {
    // SAFETY: the only thread of this test binary that reads the
    // environment at this point.
    unsafe { std::env::set_var("PYCORO_NATIVE_FRAMES", "0") };
    assert!(pycoro_ffi::api().is_none());
}
