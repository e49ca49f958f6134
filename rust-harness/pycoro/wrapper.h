/* Input of bindgen (build.rs): the patched CPython headers.  Only the
   native-frame API is kept; everything else comes from pyo3-ffi. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
