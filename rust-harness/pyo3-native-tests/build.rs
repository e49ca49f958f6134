//! The tests embed the interpreter: find its shared library at run time
//! (rpath), as PyO3's own test binaries do.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
