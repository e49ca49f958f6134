//! Links the crate's own tests (unit, integration, doc) with libpython.
//!
//! The bindings of the native-frame API come from `pycoro-ffi`, which
//! detects the API (the feature macro `Py_HAVE_NATIVE_FRAMES`) and finds
//! its functions at run time; this script only makes the embedded
//! interpreter of the tests linkable.
//!
//! The interpreter is found through `PYO3_PYTHON` (the same variable PyO3's
//! own build script reads), falling back to `build/cpython/bin/python3.13`
//! relative to the workspace root.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

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

    // The crate's own tests embed the interpreter, so they link libpython
    // even when the probe's `extension-module` feature is unified into
    // pyo3-ffi (`cargo test --workspace`).  `rustc-link-arg` reaches only
    // this package's linked targets (it has no cdylib), never the probe;
    // duplicates of pyo3-ffi's own flags are harmless.
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
