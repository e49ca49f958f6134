/* cfloor: the same functions as pycoro_harness's, written directly in C on
   the native-frame API (PyCoro_NewNative(), PyGen_NewNative()), with the
   least work a binding can do: one static PyNativeFrameDef per function, a
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

static PyNativeStep
ready_step(PyObject *gen, void *state, PyObject *sent, PyObject **result)
{
    obj_state *s = state;
    if (sent == NULL) {
        return PyNative_ERROR;
    }
    *result = s->obj;           /* the state's reference, handed over */
    s->obj = NULL;
    return PyNative_RETURN;
}

static PyNativeStep
await_step(PyObject *gen, void *state, PyObject *sent, PyObject **result)
{
    obj_state *s = state;
    if (sent == NULL) {
        return PyNative_ERROR;  /* the awaited object raised: propagate */
    }
    if (!s->awaiting) {
        s->awaiting = 1;
        *result = s->obj;       /* await it */
        s->obj = NULL;
        return PyNative_AWAIT;
    }
    *result = Py_NewRef(sent);  /* its result */
    return PyNative_RETURN;
}

static const PyNativeFrameDef ready_def = {
    ready_step, obj_traverse, obj_clear, sizeof(obj_state)};
static const PyNativeFrameDef await_def = {
    await_step, obj_traverse, obj_clear, sizeof(obj_state)};

/* ---- yield_now(n) and count(n): two counters ---- */

typedef struct {
    Py_ssize_t i, n;
} count_state;

static PyNativeStep
yield_now_step(PyObject *gen, void *state, PyObject *sent, PyObject **result)
{
    count_state *s = state;
    if (sent == NULL) {
        return PyNative_ERROR;
    }
    if (s->i < s->n) {
        s->i++;
        *result = Py_NewRef(Py_None);
        return PyNative_YIELD;
    }
    *result = PyLong_FromSsize_t(s->n);
    return *result == NULL ? PyNative_ERROR : PyNative_RETURN;
}

static PyNativeStep
count_step(PyObject *gen, void *state, PyObject *sent, PyObject **result)
{
    count_state *s = state;
    if (sent == NULL) {
        return PyNative_ERROR;
    }
    if (s->i < s->n) {
        *result = PyLong_FromSsize_t(s->i++);
        return *result == NULL ? PyNative_ERROR : PyNative_YIELD;
    }
    *result = Py_NewRef(Py_None);
    return PyNative_RETURN;
}

static const PyNativeFrameDef yield_now_def = {
    yield_now_step, NULL, NULL, sizeof(count_state)};
static const PyNativeFrameDef count_def = {
    count_step, NULL, NULL, sizeof(count_state)};

/* ---- the functions over native code (made at import) ---- */

static PyObject *ready_func, *await_func, *yield_now_func, *count_func;

static PyObject *
native_func(PyObject *globals, const char *name, int kind)
{
    PyObject *filename = PyUnicode_FromString(__FILE__);
    PyObject *uname = PyUnicode_FromString(name);
    PyObject *func = NULL;
    if (filename != NULL && uname != NULL) {
        PyObject *code = (PyObject *)PyCode_NewNative(
            filename, uname, uname, __LINE__, 1, kind);
        if (code != NULL) {
            func = PyFunction_New(code, globals);
            Py_DECREF(code);
        }
    }
    Py_XDECREF(filename);
    Py_XDECREF(uname);
    return func;
}

static PyObject *
with_obj(const PyNativeFrameDef *def, PyObject *func, PyObject *obj)
{
    PyObject *coro = PyCoro_NewNative(def, func, NULL, NULL);
    if (coro != NULL) {
        obj_state *s = PyGen_GetNativeState(coro);
        s->obj = Py_NewRef(obj);
    }
    return coro;
}

static PyObject *
with_count(PyObject *(*new)(const PyNativeFrameDef *, PyObject *,
                            PyObject *, PyObject *),
           const PyNativeFrameDef *def, PyObject *func, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *gen = new(def, func, NULL, NULL);
    if (gen != NULL) {
        count_state *s = PyGen_GetNativeState(gen);
        s->n = n;
    }
    return gen;
}

static PyObject *
ready(PyObject *module, PyObject *value)
{
    return with_obj(&ready_def, ready_func, value);
}

static PyObject *
await_(PyObject *module, PyObject *aw)
{
    return with_obj(&await_def, await_func, aw);
}

static PyObject *
yield_now(PyObject *module, PyObject *n)
{
    return with_count(PyCoro_NewNative, &yield_now_def, yield_now_func, n);
}

static PyObject *
count(PyObject *module, PyObject *n)
{
    return with_count(PyGen_NewNative, &count_def, count_func, n);
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
        || (ready_func = native_func(globals, "ready", CO_COROUTINE)) == NULL
        || (await_func = native_func(globals, "await_", CO_COROUTINE)) == NULL
        || (yield_now_func = native_func(globals, "yield_now", CO_COROUTINE)) == NULL
        || (count_func = native_func(globals, "count", CO_GENERATOR)) == NULL)
    {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
