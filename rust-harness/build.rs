//! Generates `$OUT_DIR/native_coro.rs`: bindings for the native-frame API
//! that the patched CPython adds (`PyCoro_NewNative` and friends), and only
//! for it; every other C type and function comes from `pyo3-ffi`.
//!
//! The interpreter is found through `PYO3_PYTHON` (the same variable PyO3's
//! own build script reads), falling back to `build/cpython/bin/python3.13`
//! relative to the workspace root.  Its `sysconfig.get_path('include')` is
//! the header directory given to bindgen (libclang).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The new API, and nothing else.
const FUNCTIONS: &str = "PyCoro_NewNative|PyGen_NewNative|PyAsyncGen_NewNative|\
                         PyGen_GetNativeState|PyGen_SetNativeLine|PyCode_NewNative";
/// C types that `pyo3-ffi` already defines; bindgen refers to them by name
/// (`ffi` glob-imports `pyo3::ffi`).
const FROM_PYO3_FFI: &str = "PyObject|_object|PyCodeObject|visitproc|Py_ssize_t";

fn interpreter(manifest_dir: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    match env::var_os("PYO3_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => manifest_dir.join("../build/cpython/bin/python3.13"),
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
    println!("cargo:rerun-if-changed=wrapper.h");

    let include = ask(
        &python,
        "import sysconfig; print(sysconfig.get_path('include'))",
    );
    let genobject = Path::new(&include).join("cpython/genobject.h");
    println!("cargo:rerun-if-changed={}", genobject.display());
    let header = std::fs::read_to_string(&genobject)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", genobject.display()));
    assert!(
        header.contains("PyCoro_NewNative"),
        "{} has no PyCoro_NewNative: {} is not the patched CPython (set PYO3_PYTHON)",
        genobject.display(),
        python.display()
    );

    let bindings = bindgen::Builder::default()
        .header(manifest_dir.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{include}"))
        .allowlist_function(FUNCTIONS)
        .allowlist_type("PyNative.*")
        .allowlist_var("CO_NATIVE")
        .blocklist_type(FROM_PYO3_FFI)
        // Only what is listed above: referenced C types come from pyo3-ffi.
        .allowlist_recursively(false)
        .newtype_enum("PyNativeStep")
        .layout_tests(true)
        .derive_debug(false)
        .generate_comments(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on the patched headers");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("native_coro.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));

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
