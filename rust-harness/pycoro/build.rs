//! Generates `$OUT_DIR/native_coro.rs`: bindings for the native-frame API
//! that the patched CPython adds (`PyUnstable_Coro_NewNative` and friends),
//! and only for it; every other C type and function comes from `pyo3-ffi`.
//!
//! The API is detected with its feature macro, `Py_HAVE_NATIVE_FRAMES`
//! (defined by the patched `Include/cpython/genobject.h`): bindgen is
//! asked for it, and its absence stops the build with a message naming the
//! interpreter.
//!
//! The interpreter is found through `PYO3_PYTHON` (the same variable PyO3's
//! own build script reads), falling back to `build/cpython/bin/python3.13`
//! relative to the workspace root.  Its `sysconfig.get_path('include')` is
//! the header directory given to bindgen (libclang).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The new API, and nothing else.
const FUNCTIONS: &str = "PyUnstable_Coro_NewNative|PyUnstable_Gen_NewNative|\
                         PyUnstable_AsyncGen_NewNative|PyUnstable_Gen_GetNativeState|\
                         PyUnstable_Gen_SetNativeLine|PyUnstable_Code_NewNative|\
                         PyUnstable_NativeFunction_New";
/// The C types of the new API.
const TYPES: &str = "PyUnstable_NativeFrameDef|PyUnstable_NativeStep|PyUnstable_NativeStepFunc";
/// The constants: the code flag and the feature macro (its value is the
/// API version).
const VARS: &str = "CO_NATIVE|Py_HAVE_NATIVE_FRAMES";
/// The API version these bindings are written for.
const API_VERSION: u32 = 1;
/// C types that `pyo3-ffi` already defines; bindgen refers to them by name
/// (`ffi` glob-imports `pyo3::ffi`).
const FROM_PYO3_FFI: &str = "PyObject|_object|PyCodeObject|PyThreadState|_ts|visitproc|Py_ssize_t";

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
    println!("cargo:rerun-if-changed=wrapper.h");

    let include = ask(
        &python,
        "import sysconfig; print(sysconfig.get_path('include'))",
    );
    let genobject = Path::new(&include).join("cpython/genobject.h");
    println!("cargo:rerun-if-changed={}", genobject.display());
    println!(
        "cargo:rerun-if-changed={}",
        Path::new(&include).join("cpython/code.h").display()
    );

    let bindings = bindgen::Builder::default()
        .header(manifest_dir.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{include}"))
        .allowlist_function(FUNCTIONS)
        .allowlist_type(TYPES)
        .allowlist_var(VARS)
        .blocklist_type(FROM_PYO3_FFI)
        // Only what is listed above: referenced C types come from pyo3-ffi.
        .allowlist_recursively(false)
        .newtype_enum("PyUnstable_NativeStep")
        .layout_tests(true)
        .derive_debug(false)
        .generate_comments(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on the patched headers");
    // The feature macro, as the compiler saw it: absent from the bindings
    // when the headers are not those of the patched CPython.
    let text = bindings.to_string();
    let version = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const Py_HAVE_NATIVE_FRAMES: u32 = ")?
                .strip_suffix(';')?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "{} does not define Py_HAVE_NATIVE_FRAMES: {} is not a CPython with the \
                 native frames API (build it with scripts/build-cpython, or set PYO3_PYTHON \
                 to a patched interpreter)",
                genobject.display(),
                python.display()
            )
        });
    assert!(
        version == API_VERSION,
        "{} defines Py_HAVE_NATIVE_FRAMES {version}, but pycoro is written for version \
         {API_VERSION} of the native frames API",
        python.display()
    );
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
