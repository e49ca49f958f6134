//! Build-script helper for crates that define native coroutines with
//! `pycoro::coroutine_def!`: tells the compiler which source lines each
//! definition's Rust function spans, so that its native code object covers
//! exactly that function (see `pycoro::lines`).
//!
//! In the crate's `build.rs` (with `pycoro-build` as a build-dependency):
//!
//! ```no_run
//! // build.rs
//! pycoro_build::emit_fn_spans();
//! ```
//!
//! It parses every `src/**/*.rs` file of the crate with `syn`, finds each
//! `coroutine_def!` (or `generator_def!`, `async_generator_def!`) call
//! inside a function (free function, method, or a
//! function nested in either), and emits
//! `cargo:rustc-env=PYCORO_FN_SPANS=path:macro_line:first:last;...`, where
//! `first` is the line of the innermost enclosing function's `fn` keyword
//! and `last` the line of its closing brace.  `coroutine_def!` reads the
//! variable with `option_env!`, so a crate without this build script still
//! compiles (its code objects then start at the macro call).  Files that do
//! not parse are skipped with a `cargo:warning`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::Span;
use syn::visit::Visit;

/// The macros that make a native code object (pycoro's): each expands to
/// `coroutine_def!`, whose `line!()` is the line of the outermost call.
pub const DEF_MACROS: [&str; 3] = ["coroutine_def", "generator_def", "async_generator_def"];

/// The macro that defines a native coroutine function (pycoro's
/// `coroutine_fn!`): the function's `fn` is inside the call, whose
/// `line!()` is the line of the call (before the `fn`).
pub const FN_MACRO: &str = "coroutine_fn";

/// One `coroutine_def!` (or `generator_def!`, `async_generator_def!`) call:
/// its line and its function's first and last lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FnSpan {
    /// Line of the `coroutine_def!` invocation (what `line!()` gives).
    pub macro_line: u32,
    /// Line of the enclosing function's `fn` keyword.
    pub first: u32,
    /// Line of the enclosing function's closing brace.
    pub last: u32,
}

fn line(span: Span) -> u32 {
    u32::try_from(span.start().line).unwrap_or(u32::MAX)
}

fn end_line(span: Span) -> u32 {
    u32::try_from(span.end().line).unwrap_or(u32::MAX)
}

struct Finder {
    /// Enclosing functions, innermost last: (first, last).
    stack: Vec<(u32, u32)>,
    found: Vec<FnSpan>,
}

impl Finder {
    fn within(&mut self, first: u32, last: u32, visit: impl FnOnce(&mut Self)) {
        self.stack.push((first, last));
        visit(self);
        self.stack.pop();
    }
}

impl<'ast> Visit<'ast> for Finder {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let first = line(f.sig.fn_token.span);
        let last = end_line(f.block.brace_token.span.close());
        self.within(first, last, |v| syn::visit::visit_item_fn(v, f));
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let first = line(f.sig.fn_token.span);
        let last = end_line(f.block.brace_token.span.close());
        self.within(first, last, |v| syn::visit::visit_impl_item_fn(v, f));
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let is_def = m
            .path
            .segments
            .last()
            .is_some_and(|s| DEF_MACROS.iter().any(|name| s.ident == name));
        if let (true, Some(&(first, last))) = (is_def, self.stack.last()) {
            let macro_line = m.path.segments.first().map_or(0, |s| line(s.ident.span()));
            self.found.push(FnSpan {
                macro_line,
                first,
                last,
            });
        }
        // `coroutine_fn! { fn name(..) { .. } }`: the function is inside the
        // macro call, whose `line!()` is the line of the call.
        let is_fn = m.path.segments.last().is_some_and(|s| s.ident == FN_MACRO);
        if is_fn {
            // The `fn` keyword's line, and the closing brace of the first
            // brace group after it (the function's body).
            let mut tokens = m.tokens.clone().into_iter();
            let first = tokens.by_ref().find_map(|t| match t {
                proc_macro2::TokenTree::Ident(i) if i == "fn" => Some(line(i.span())),
                _ => None,
            });
            let last = tokens.find_map(|t| match t {
                proc_macro2::TokenTree::Group(g)
                    if g.delimiter() == proc_macro2::Delimiter::Brace =>
                {
                    Some(end_line(g.span_close()))
                }
                _ => None,
            });
            if let (Some(first), Some(last)) = (first, last) {
                let macro_line = m.path.segments.first().map_or(0, |s| line(s.ident.span()));
                self.found.push(FnSpan {
                    macro_line,
                    first,
                    last,
                });
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

/// The `coroutine_def!` calls of one source file, in source order.
pub fn fn_spans(source: &str) -> syn::Result<Vec<FnSpan>> {
    let file = syn::parse_file(source)?;
    let mut finder = Finder {
        stack: Vec::new(),
        found: Vec::new(),
    };
    finder.visit_file(&file);
    Ok(finder.found)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `PYCORO_FN_SPANS` table of the crate rooted at `manifest_dir`.
pub fn spans_table(manifest_dir: &Path) -> String {
    let mut files = Vec::new();
    rust_files(&manifest_dir.join("src"), &mut files);
    let mut table = String::new();
    for path in files {
        let rel = path.strip_prefix(manifest_dir).unwrap_or(&path);
        let Ok(source) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !DEF_MACROS
            .iter()
            .chain([&FN_MACRO])
            .any(|name| source.contains(name))
        {
            continue;
        }
        match fn_spans(&source) {
            Ok(spans) => {
                for s in spans {
                    if !table.is_empty() {
                        table.push(';');
                    }
                    let _ = write!(
                        table,
                        "{}:{}:{}:{}",
                        rel.to_string_lossy(),
                        s.macro_line,
                        s.first,
                        s.last
                    );
                }
            }
            Err(e) => println!(
                "cargo:warning=pycoro-build: cannot parse {}: {e}",
                path.display()
            ),
        }
    }
    table
}

/// Emit `PYCORO_FN_SPANS` for the crate being built (call from `build.rs`).
pub fn emit_fn_spans() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is not set"),
    );
    println!("cargo:rerun-if-changed=src");
    println!(
        "cargo:rustc-env=PYCORO_FN_SPANS={}",
        spans_table(&manifest_dir)
    );
}

#[cfg(test)]
mod tests {
    use super::{FnSpan, fn_spans};

    #[test]
    fn finds_enclosing_functions() {
        let src = r#"
#[attr]
fn free(
    x: u32,
) -> u32 {
    let d = coroutine_def!("free");
    "}"; '}';
    x
}

struct S;
impl S {
    /// doc
    fn method(&self) {
        fn nested() {
            pycoro::coroutine_def!("nested");
        }
        coroutine_def!("method", nlines = 3);
    }
}

fn no_def() {}
"#;
        let spans = fn_spans(src).unwrap();
        assert_eq!(
            spans,
            vec![
                FnSpan {
                    macro_line: 6,
                    first: 3,
                    last: 9
                },
                FnSpan {
                    macro_line: 16,
                    first: 15,
                    last: 17
                },
                FnSpan {
                    macro_line: 18,
                    first: 14,
                    last: 19
                },
            ]
        );
    }

    #[test]
    fn finds_the_function_inside_coroutine_fn() {
        let src = r#"
pycoro::coroutine_fn! {
    /// doc
    fn ready(value) {
        async move {
            Ok(value)
        }
    }
}
"#;
        assert_eq!(
            fn_spans(src).unwrap(),
            vec![FnSpan {
                macro_line: 2,
                first: 4,
                last: 8
            }]
        );
    }
}
