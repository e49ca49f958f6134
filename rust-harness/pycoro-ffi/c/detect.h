/* Preprocessed (never compiled) by build.rs: the value of the feature
   macro in the target interpreter's headers, between two markers. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#ifdef Py_HAVE_NATIVE_FRAMES
PYCORO_FFI_VERSION = Py_HAVE_NATIVE_FRAMES ;
#else
PYCORO_FFI_VERSION = 0 ;
#endif
