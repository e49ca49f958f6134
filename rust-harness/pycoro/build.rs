//! Checks that the native frames API is there, and links the tests.
//!
//! The API is detected by `pycoro-ffi` with its feature macro,
//! `Py_HAVE_NATIVE_FRAMES`, in the headers of the interpreter pyo3-ffi
//! builds for (`PYO3_PYTHON`, the same variable PyO3's own build script
//! reads), and reported to this script as `DEP_PYCORO_FFI_NATIVE_FRAMES`
//! (the API version, or 0).  Its absence stops the build with a message
//! naming the interpreter: the harness is for the patched CPython (code
//! meant to build everywhere checks `pycoro_ffi::api()` at run time
//! instead, as the patched PyO3 does).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The API version pycoro is written for.
const API_VERSION: &str = "1";

fn interpreter(manifest_dir: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    match env::var_os("PYO3_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => manifest_dir.join("../../build/cpython/bin/python3.13"),
    }
}

fn ask(python: &Path, code: &str) -> String {
    let out = Command::new(python)
        .args(["-c", code])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} -c {code:?} failed:\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("interpreter printed non-UTF-8")
        .trim()
        .to_owned()
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let python = interpreter(&manifest_dir);
    println!("cargo:rerun-if-changed={}", python.display());

    let version = env::var("DEP_PYCORO_FFI_NATIVE_FRAMES").unwrap_or_default();
    assert!(
        version != "0" && !version.is_empty(),
        "the headers of {} do not define Py_HAVE_NATIVE_FRAMES: it is not a CPython with the \
         native frames API (build it with scripts/build-cpython, or set PYO3_PYTHON to a \
         patched interpreter)",
        python.display()
    );
    assert!(
        version == API_VERSION,
        "{} defines Py_HAVE_NATIVE_FRAMES {version}, but pycoro is written for version \
         {API_VERSION} of the native frames API",
        python.display()
    );

    // The crate's own tests (unit, integration) embed the interpreter, so
    // they link libpython even when the probe's `extension-module` feature
    // is unified into pyo3-ffi (`cargo test --workspace`).  `rustc-link-arg`
    // reaches only this package's linked targets (it has no cdylib), never
    // the probe; duplicates of pyo3-ffi's own flags are harmless.
    let libdir = ask(
        &python,
        "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
    );
    let ldversion = ask(
        &python,
        "import sysconfig; print(sysconfig.get_config_var('LDVERSION'))",
    );
    println!("cargo:rustc-link-arg=-L{libdir}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    println!("cargo:rustc-link-arg=-lpython{ldversion}");
}
