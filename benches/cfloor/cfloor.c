/* cfloor: the same functions as pycoro_harness's, written directly in C on
   the native-frame API (PyUnstable_Coro_NewNative(),
   PyUnstable_Gen_NewNative()), with the least work a binding can do: one
   static PyUnstable_NativeFrameDef and one native function per function, a
   few words of state, no allocation besides the coroutine itself.  It is the
   floor that any binding (the Rust harness, PyO3, Cython) built on the API
   could reach; benches/coro_bench.py reports it as the "C API" column.
   scripts/bench compiles it against the patched interpreter's headers.

     ready(value)   async def ready(value): return value
     await_(aw)     async def await_(aw): return await aw
     yield_now(n)   async def yield_now(n): for _ in range(n): await asyncio.sleep(0)
                    (a bare `yield None`, as the harness's yield_now), return n
     count(n)       def count(n): yield from range(n)
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* ---- ready(value) and await_(aw): one object in the state ---- */

typedef struct {
    PyObject *obj;      /* ready: the value; await_: the awaitable */
    int awaiting;       /* await_: the awaitable was handed to CPython */
} obj_state;

static int
obj_traverse(void *state, visitproc visit, void *arg)
{
    Py_VISIT(((obj_state *)state)->obj);
    return 0;
}

static void
obj_clear(void *state)
{
    Py_CLEAR(((obj_state *)state)->obj);
}

static PyUnstable_NativeStep
ready_step(PyThreadState *tstate, PyObject *gen, void *state,
           PyObject *sent, PyObject **result)
{
    obj_state *s = state;
    if (sent == NULL) {
        return PyUnstable_NATIVE_ERROR;
    }
    *result = s->obj;           /* the state's reference, handed over */
    s->obj = NULL;
    return PyUnstable_NATIVE_RETURN;
}

static PyUnstable_NativeStep
await_step(PyThreadState *tstate, PyObject *gen, void *state,
           PyObject *sent, PyObject **result)
{
    obj_state *s = state;
    if (sent == NULL) {
        /* the awaited object raised: propagate */
        return PyUnstable_NATIVE_ERROR;
    }
    if (!s->awaiting) {
        s->awaiting = 1;
        *result = s->obj;       /* await it */
        s->obj = NULL;
        return PyUnstable_NATIVE_AWAIT;
    }
    *result = Py_NewRef(sent);  /* its result */
    return PyUnstable_NATIVE_RETURN;
}

static const PyUnstable_NativeFrameDef ready_def = {
    .size = sizeof(PyUnstable_NativeFrameDef), .step = ready_step,
    .traverse = obj_traverse, .clear = obj_clear,
    .state_size = sizeof(obj_state)};
static const PyUnstable_NativeFrameDef await_def = {
    .size = sizeof(PyUnstable_NativeFrameDef), .step = await_step,
    .traverse = obj_traverse, .clear = obj_clear,
    .state_size = sizeof(obj_state)};

/* ---- yield_now(n) and count(n): two counters ---- */

typedef struct {
    Py_ssize_t i, n;
} count_state;

static PyUnstable_NativeStep
yield_now_step(PyThreadState *tstate, PyObject *gen, void *state,
               PyObject *sent, PyObject **result)
{
    count_state *s = state;
    if (sent == NULL) {
        return PyUnstable_NATIVE_ERROR;
    }
    if (s->i < s->n) {
        s->i++;
        *result = Py_NewRef(Py_None);
        return PyUnstable_NATIVE_YIELD;
    }
    *result = PyLong_FromSsize_t(s->n);
    return *result == NULL ? PyUnstable_NATIVE_ERROR
                           : PyUnstable_NATIVE_RETURN;
}

static PyUnstable_NativeStep
count_step(PyThreadState *tstate, PyObject *gen, void *state,
           PyObject *sent, PyObject **result)
{
    count_state *s = state;
    if (sent == NULL) {
        return PyUnstable_NATIVE_ERROR;
    }
    if (s->i < s->n) {
        /* As range's iterator (and FOR_ITER_RANGE) makes its items:
           PyLong_FromLong() has the one-digit fast path that 3.13's
           PyLong_FromSsize_t() lacks (about 35 instructions per item).
           i < n, and n came from a Py_ssize_t, so it fits in a long
           where long is as wide; elsewhere keep PyLong_FromSsize_t(). */
#if SIZEOF_LONG >= SIZEOF_SIZE_T
        *result = PyLong_FromLong((long)s->i++);
#else
        *result = PyLong_FromSsize_t(s->i++);
#endif
        return *result == NULL ? PyUnstable_NATIVE_ERROR
                           : PyUnstable_NATIVE_YIELD;
    }
    *result = Py_NewRef(Py_None);
    return PyUnstable_NATIVE_RETURN;
}

static const PyUnstable_NativeFrameDef yield_now_def = {
    .size = sizeof(PyUnstable_NativeFrameDef), .step = yield_now_step,
    .state_size = sizeof(count_state)};
static const PyUnstable_NativeFrameDef count_def = {
    .size = sizeof(PyUnstable_NativeFrameDef), .step = count_step,
    .state_size = sizeof(count_state)};

/* ---- the native functions (made at import) ---- */

static PyObject *ready_func, *await_func, *yield_now_func, *count_func;

static PyObject *
native_func(PyObject *globals, const PyUnstable_NativeFrameDef *def,
            const char *name, int kind)
{
    PyObject *filename = PyUnicode_FromString(__FILE__);
    PyObject *uname = PyUnicode_FromString(name);
    PyObject *func = NULL;
    if (filename != NULL && uname != NULL) {
        PyObject *code = (PyObject *)PyUnstable_Code_NewNative(
            filename, uname, uname, __LINE__, 1, kind, NULL);
        if (code != NULL) {
            func = PyUnstable_NativeFunction_New(def, code, globals);
            Py_DECREF(code);
        }
    }
    Py_XDECREF(filename);
    Py_XDECREF(uname);
    return func;
}

/* A new coroutine of `func`, its state holding `obj`. */
static PyObject *
with_obj(PyObject *func, PyObject *obj)
{
    void *state;
    PyObject *coro = PyUnstable_Coro_NewNative(func, NULL, NULL, &state);
    if (coro != NULL) {
        ((obj_state *)state)->obj = Py_NewRef(obj);
    }
    return coro;
}

/* A new object of `func` made by `new`, its state holding the count. */
static PyObject *
with_count(PyObject *(*new)(PyObject *, PyObject *, PyObject *, void **),
           PyObject *func, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    void *state;
    PyObject *gen = new(func, NULL, NULL, &state);
    if (gen != NULL) {
        ((count_state *)state)->n = n;
    }
    return gen;
}

static PyObject *
ready(PyObject *module, PyObject *value)
{
    return with_obj(ready_func, value);
}

static PyObject *
await_(PyObject *module, PyObject *aw)
{
    return with_obj(await_func, aw);
}

static PyObject *
yield_now(PyObject *module, PyObject *n)
{
    return with_count(PyUnstable_Coro_NewNative, yield_now_func, n);
}

static PyObject *
count(PyObject *module, PyObject *n)
{
    return with_count(PyUnstable_Gen_NewNative, count_func, n);
}

static PyMethodDef cfloor_methods[] = {
    {"ready", ready, METH_O, "async def ready(value): return value"},
    {"await_", await_, METH_O, "async def await_(aw): return await aw"},
    {"yield_now", yield_now, METH_O, "n bare yields, then return n"},
    {"count", count, METH_O, "def count(n): yield from range(n)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cfloor_module = {
    PyModuleDef_HEAD_INIT, "cfloor",
    "Native coroutines written directly on the C API (the floor).", -1,
    cfloor_methods,
};

PyMODINIT_FUNC
PyInit_cfloor(void)
{
    PyObject *m = PyModule_Create(&cfloor_module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *globals = PyModule_GetDict(m);
    if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0
        || (ready_func = native_func(globals, &ready_def, "ready",
                                     CO_COROUTINE)) == NULL
        || (await_func = native_func(globals, &await_def, "await_",
                                     CO_COROUTINE)) == NULL
        || (yield_now_func = native_func(globals, &yield_now_def, "yield_now",
                                         CO_COROUTINE)) == NULL
        || (count_func = native_func(globals, &count_def, "count",
                                     CO_GENERATOR)) == NULL)
    {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
