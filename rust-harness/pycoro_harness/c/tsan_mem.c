/* The memory-intrinsic entry points of LLVM's ThreadSanitizer
 * instrumentation, for a build of this cdylib with nightly rustc's
 * -Zsanitizer=thread loaded into a gcc-built TSan interpreter
 * (scripts/build-harness --thread-sanitize).
 *
 * rustc links no TSan runtime into a cdylib on Linux: the instrumented
 * code calls the __tsan_* functions of the runtime already in the process,
 * here gcc's libtsan, which build/cpython-tsan links.  The nightly's LLVM
 * lowers memcpy/memmove/memset to __tsan_memcpy/__tsan_memmove/
 * __tsan_memset, which gcc 12's libtsan does not export (every other
 * __tsan_* the Rust code calls, it does), so without these the extension
 * fails to load ("undefined symbol: __tsan_memcpy").
 * These forward to libc's names, which that runtime intercepts: the
 * interceptor checks the ranges as compiler-rt's __tsan_mem* do.
 *
 * Compiled (uninstrumented) and linked only when the crate is built with
 * -Zsanitizer=thread (build.rs); the cdylib does not export them. */
#include <stddef.h>
#include <string.h>

void *__tsan_memcpy(void *dst, const void *src, size_t n);
void *__tsan_memmove(void *dst, const void *src, size_t n);
void *__tsan_memset(void *dst, int c, size_t n);

void *
__tsan_memcpy(void *dst, const void *src, size_t n)
{
    return memcpy(dst, src, n);
}

void *
__tsan_memmove(void *dst, const void *src, size_t n)
{
    return memmove(dst, src, n);
}

void *
__tsan_memset(void *dst, int c, size_t n)
{
    return memset(dst, c, n);
}
