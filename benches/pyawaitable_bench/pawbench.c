/* pawbench: the ready/await_ functions of benches/cfloor/cfloor.c written
   on PyAwaitable (the library form of PEP 852's callback design), the
   least work its API allows: an awaitable object per call, one registered
   await with a callback that sets the result.  Built by build.sh against
   pip's pyawaitable (a header-only copy, pyawaitable.include()); measured
   by count.py beside async def and the C floor.

     ready(value)   async def ready(value): return value
     await_(aw)     async def await_(aw): return await aw

   yield_now and count have no PyAwaitable form of the same meaning (it
   makes no generators, and a bare `yield None` is not in its API), so the
   suspend_resume and generator cases are not measured.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pyawaitable.h>

/* ready(value): no await; the result is set before the object is awaited. */
static PyObject *
ready(PyObject *module, PyObject *value)
{
    PyObject *awaitable = PyAwaitable_New();
    if (awaitable == NULL) {
        return NULL;
    }
    if (PyAwaitable_SetResult(awaitable, value) < 0) {
        Py_DECREF(awaitable);
        return NULL;
    }
    return awaitable;
}

/* The callback of await_: the awaited object's result is the result. */
static int
return_result(PyObject *awaitable, PyObject *result)
{
    return PyAwaitable_SetResult(awaitable, result);
}

static PyObject *
await_(PyObject *module, PyObject *aw)
{
    PyObject *awaitable = PyAwaitable_New();
    if (awaitable == NULL) {
        return NULL;
    }
    if (PyAwaitable_AddAwait(awaitable, aw, return_result, NULL) < 0) {
        PyAwaitable_Cancel(awaitable);
        Py_DECREF(awaitable);
        return NULL;
    }
    return awaitable;
}

static PyMethodDef pawbench_methods[] = {
    {"ready", ready, METH_O, "async def ready(value): return value"},
    {"await_", await_, METH_O, "async def await_(aw): return await aw"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef pawbench_module = {
    PyModuleDef_HEAD_INIT, "pawbench",
    "ready and await_ on PyAwaitable (PEP 852's design as a library).", -1,
    pawbench_methods,
};

PyMODINIT_FUNC
PyInit_pawbench(void)
{
    if (PyAwaitable_Init() < 0) {
        return NULL;
    }
    return PyModule_Create(&pawbench_module);
}
