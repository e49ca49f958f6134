//! Tells `pycoro::coroutine_def!` which lines each native function spans,
//! and, in a `-Zsanitizer=thread` build, links `c/tsan_mem.c` (the
//! `__tsan_mem*` functions that gcc's TSan runtime lacks; see that file).
use std::env;

fn main() {
    pycoro_build::emit_fn_spans();

    println!("cargo:rerun-if-changed=c/tsan_mem.c");
    // Cargo sets CARGO_CFG_SANITIZE from the target's `cfg(sanitize)`,
    // which rustc reports only with -Zsanitizer (nightly).
    let tsan = env::var("CARGO_CFG_SANITIZE").is_ok_and(|s| s.split(',').any(|s| s == "thread"));
    if tsan {
        // Object files, not an archive: a member of an archive would be
        // pulled in only by references that the linker meets before it,
        // and std's rlibs, which call these too, come after this crate.
        let objects = cc::Build::new()
            .file("c/tsan_mem.c")
            .flag("-fno-builtin")
            .warnings(true)
            .compile_intermediates();
        for object in objects {
            println!("cargo:rustc-link-arg-cdylib={}", object.display());
        }
    }
}
