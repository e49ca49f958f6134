//! Tells `pycoro::coroutine_def!` which lines each native function spans.
fn main() {
    pycoro_build::emit_fn_spans();
}
