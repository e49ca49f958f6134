//! Detects the native frames API in the headers of the interpreter that
//! `pyo3-ffi` builds for, with the feature macro `Py_HAVE_NATIVE_FRAMES`.
//!
//! The C preprocessor (`cc::Build::expand`) evaluates the macro after
//! `#include <Python.h>` (`c/detect.h`); when it is defined to the version
//! these bindings are written for ([`API_VERSION`]), the crate is built
//! with `--cfg Py_HAVE_NATIVE_FRAMES` and `PYCORO_FFI_HEADER_VERSION` set
//! to it, and `c/layout.c` is compiled for the layout tests.  Otherwise
//! (stock headers, the limited API, an interpreter that cannot be asked,
//! another version) the crate still builds and reports the API absent.
//! Dependents see the result as `DEP_PYCORO_FFI_NATIVE_FRAMES` (the
//! version, or 0): the crate's `links` metadata.
//!
//! The interpreter is the one `pyo3-build-config` resolved for pyo3-ffi
//! (`PYO3_PYTHON`, `PYO3_CONFIG_FILE`, ...); its include directory is
//! `sysconfig.get_path('include')`, or `PYCORO_FFI_PYTHON_INCLUDE` when set
//! (cross builds, where the interpreter cannot run).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The API version these bindings are written for (`Py_HAVE_NATIVE_FRAMES`).
const API_VERSION: u32 = 1;

fn include_dir(config: &pyo3_build_config::InterpreterConfig) -> Result<PathBuf, String> {
    println!("cargo:rerun-if-env-changed=PYCORO_FFI_PYTHON_INCLUDE");
    if let Some(dir) = env::var_os("PYCORO_FFI_PYTHON_INCLUDE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let python = config
        .executable()
        .ok_or("pyo3-build-config knows no interpreter executable")?;
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('include'))",
        ])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(dir))
}

/// The value of `Py_HAVE_NATIVE_FRAMES` (0 when undefined).
fn header_version(include: &PathBuf, limited: bool) -> Result<u32, String> {
    let mut build = cc::Build::new();
    build
        .file("c/detect.h")
        .include(include)
        .cargo_metadata(false);
    if limited {
        build.define("Py_LIMITED_API", "0x030D0000");
    }
    let text = build.try_expand().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text);
    text.split(';')
        .find_map(|chunk| {
            let (_, value) = chunk.split_once("PYCORO_FFI_VERSION =")?;
            value
                .trim()
                .trim_end_matches(['u', 'U', 'l', 'L'])
                .parse()
                .ok()
        })
        .ok_or_else(|| "the preprocessed c/detect.h has no PYCORO_FFI_VERSION".to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=c/detect.h");
    println!("cargo:rerun-if-changed=c/layout.c");
    println!("cargo:rustc-check-cfg=cfg(Py_HAVE_NATIVE_FRAMES)");
    let config = pyo3_build_config::get();
    // The tests embed the interpreter: they link libpython even when an
    // extension's `extension-module` feature is unified into pyo3-ffi
    // (`cargo test --workspace`), and find it at run time.
    // `rustc-link-arg` reaches only this package's own linked targets (the
    // tests: it has no cdylib or bin), never a crate that depends on it.
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:rustc-link-arg=-L{lib_dir}");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        if let Some(lib_name) = config.lib_name() {
            println!("cargo:rustc-link-arg=-l{lib_name}");
        }
    }
    // Any stable ABI (abi3, abi3t) hides the unstable tier.
    let limited = matches!(
        config.target_abi().kind(),
        pyo3_build_config::PythonAbiKind::Stable(_)
    );
    let found = include_dir(config).and_then(|include| {
        for header in ["Python.h", "cpython/genobject.h", "cpython/code.h"] {
            println!("cargo:rerun-if-changed={}", include.join(header).display());
        }
        header_version(&include, limited).map(|v| (include, v))
    });
    let (include, version) = match found {
        Ok(found) => found,
        Err(e) => {
            println!("cargo:warning=pycoro-ffi: native frames API reported absent: {e}");
            println!("cargo:native_frames=0");
            println!("cargo:rustc-env=PYCORO_FFI_HEADER_VERSION=0");
            return;
        }
    };
    let version = if version == API_VERSION {
        version
    } else {
        if version != 0 {
            println!(
                "cargo:warning=pycoro-ffi: the headers in {} define Py_HAVE_NATIVE_FRAMES {version}, \
                 these bindings are for version {API_VERSION}: reported absent",
                include.display()
            );
        }
        0
    };
    println!("cargo:native_frames={version}");
    println!("cargo:rustc-env=PYCORO_FFI_HEADER_VERSION={version}");
    if version != 0 {
        println!("cargo:rustc-cfg=Py_HAVE_NATIVE_FRAMES");
        // The layout probe: linked only into binaries that call it (the
        // tests), since a static archive member is pulled in by reference.
        cc::Build::new()
            .file("c/layout.c")
            .include(&include)
            .warnings(true)
            .compile("pycoro_ffi_layout");
    }
}
