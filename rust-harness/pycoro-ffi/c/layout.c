/* The layout of the native frames API as the C compiler sees it in the
   target interpreter's headers, for the layout tests of pycoro-ffi
   (src/lib.rs, `layout`).  Compiled by build.rs only when the headers
   define Py_HAVE_NATIVE_FRAMES; the linker keeps this object only in the
   test binaries that call it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

enum {
    PYCORO_FFI_SIZEOF_DEF,
    PYCORO_FFI_ALIGNOF_DEF,
    PYCORO_FFI_OFFSETOF_SIZE,
    PYCORO_FFI_OFFSETOF_STEP,
    PYCORO_FFI_OFFSETOF_TRAVERSE,
    PYCORO_FFI_OFFSETOF_CLEAR,
    PYCORO_FFI_OFFSETOF_STATE_SIZE,
    PYCORO_FFI_OFFSETOF_LINENO_OFFSET,
    PYCORO_FFI_OFFSETOF_FLAGS,
    PYCORO_FFI_SIZEOF_STEP_ENUM,
};

long long
pycoro_ffi_layout(int what)
{
    switch (what) {
    case PYCORO_FFI_SIZEOF_DEF:
        return (long long)sizeof(PyUnstable_NativeFrameDef);
    case PYCORO_FFI_ALIGNOF_DEF:
        return (long long)_Alignof(PyUnstable_NativeFrameDef);
    case PYCORO_FFI_OFFSETOF_SIZE:
        return (long long)offsetof(PyUnstable_NativeFrameDef, size);
    case PYCORO_FFI_OFFSETOF_STEP:
        return (long long)offsetof(PyUnstable_NativeFrameDef, step);
    case PYCORO_FFI_OFFSETOF_TRAVERSE:
        return (long long)offsetof(PyUnstable_NativeFrameDef, traverse);
    case PYCORO_FFI_OFFSETOF_CLEAR:
        return (long long)offsetof(PyUnstable_NativeFrameDef, clear);
    case PYCORO_FFI_OFFSETOF_STATE_SIZE:
        return (long long)offsetof(PyUnstable_NativeFrameDef, state_size);
    case PYCORO_FFI_OFFSETOF_LINENO_OFFSET:
        return (long long)offsetof(PyUnstable_NativeFrameDef, lineno_offset);
    case PYCORO_FFI_OFFSETOF_FLAGS:
        return (long long)offsetof(PyUnstable_NativeFrameDef, flags);
    case PYCORO_FFI_SIZEOF_STEP_ENUM:
        return (long long)sizeof(PyUnstable_NativeStep);
    }
    return -1;
}

/* The constants, in the order of src/lib.rs's `layout::CONSTANTS`. */
long long
pycoro_ffi_constant(int what)
{
    switch (what) {
    case 0: return PyUnstable_NATIVE_ERROR;
    case 1: return PyUnstable_NATIVE_RETURN;
    case 2: return PyUnstable_NATIVE_YIELD;
    case 3: return PyUnstable_NATIVE_AWAIT;
    case 4: return PyUnstable_NATIVE_AWAIT_ITER;
    case 5: return CO_NATIVE;
    case 6: return Py_HAVE_NATIVE_FRAMES;
    case 7: return CO_GENERATOR;
    case 8: return CO_COROUTINE;
    case 9: return CO_ASYNC_GENERATOR;
    case 10: return PyUnstable_NATIVE_KEEP_HANDLED_EXCEPTION;
    }
    return -1000;
}
