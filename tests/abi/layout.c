/* Print the size and layout of CPython's public structs, one line each:
 *
 *     <struct>.<field> offset=<n> size=<n>
 *     sizeof(<struct>) = <n>
 *
 * tests/test_abi.py compiles this file twice, against the headers of the
 * pristine CPython 3.13.5 and against the headers of the patched build, and
 * requires the two outputs to be identical: an extension wheel built for
 * stock 3.13 (which bakes these offsets into its machine code) must work
 * unchanged on the patched interpreter.
 *
 * Only the public (non-internal) headers are used, as an extension sees
 * them.  Fields only present in special builds (Py_TRACE_REFS) are not
 * named.
 */
#include <Python.h>
#include <frameobject.h>
#include <stddef.h>
#include <stdio.h>

#define SIZE(T) printf("sizeof(%s) = %zu\n", #T, sizeof(T))
#define FIELD(T, f)                                                         \
    printf("%s.%s offset=%zu size=%zu\n", #T, #f, offsetof(T, f),          \
           sizeof(((T *)0)->f))

/* The generator head is the same for gi_/cr_/ag_ objects. */
#define GEN_FIELDS(T, p)                                                    \
    SIZE(T);                                                                \
    FIELD(T, ob_base);                                                      \
    FIELD(T, p##_weakreflist);                                              \
    FIELD(T, p##_name);                                                     \
    FIELD(T, p##_qualname);                                                 \
    FIELD(T, p##_exc_state);                                                \
    FIELD(T, p##_origin_or_finalizer);                                      \
    FIELD(T, p##_hooks_inited);                                             \
    FIELD(T, p##_closed);                                                   \
    FIELD(T, p##_running_async);                                            \
    FIELD(T, p##_frame_state);                                              \
    FIELD(T, p##_iframe)

int
main(void)
{
    printf("PY_VERSION_HEX = 0x%08lx\n", (unsigned long)PY_VERSION_HEX);
    printf("SIZEOF_VOID_P = %d\n", (int)SIZEOF_VOID_P);

    /* Objects */
    SIZE(PyObject);
#ifdef Py_GIL_DISABLED
    /* The free-threaded header (3.13t): no ob_refcnt. */
    FIELD(PyObject, ob_tid);
    FIELD(PyObject, ob_mutex);
    FIELD(PyObject, ob_gc_bits);
    FIELD(PyObject, ob_ref_local);
    FIELD(PyObject, ob_ref_shared);
#else
    FIELD(PyObject, ob_refcnt);
#endif
    FIELD(PyObject, ob_type);
    SIZE(PyVarObject);
    FIELD(PyVarObject, ob_size);

    /* Generators, coroutines, async generators */
    GEN_FIELDS(PyGenObject, gi);
    GEN_FIELDS(PyCoroObject, cr);
    GEN_FIELDS(PyAsyncGenObject, ag);
    SIZE(_PyErr_StackItem);
    FIELD(_PyErr_StackItem, exc_value);
    FIELD(_PyErr_StackItem, previous_item);

    /* Code objects */
    SIZE(PyCodeObject);
    FIELD(PyCodeObject, co_consts);
    FIELD(PyCodeObject, co_names);
    FIELD(PyCodeObject, co_exceptiontable);
    FIELD(PyCodeObject, co_flags);
    FIELD(PyCodeObject, co_argcount);
    FIELD(PyCodeObject, co_posonlyargcount);
    FIELD(PyCodeObject, co_kwonlyargcount);
    FIELD(PyCodeObject, co_stacksize);
    FIELD(PyCodeObject, co_firstlineno);
    FIELD(PyCodeObject, co_nlocalsplus);
    FIELD(PyCodeObject, co_framesize);
    FIELD(PyCodeObject, co_nlocals);
    FIELD(PyCodeObject, co_ncellvars);
    FIELD(PyCodeObject, co_nfreevars);
    FIELD(PyCodeObject, co_version);
    FIELD(PyCodeObject, co_localsplusnames);
    FIELD(PyCodeObject, co_localspluskinds);
    FIELD(PyCodeObject, co_filename);
    FIELD(PyCodeObject, co_name);
    FIELD(PyCodeObject, co_qualname);
    FIELD(PyCodeObject, co_linetable);
    FIELD(PyCodeObject, co_weakreflist);
    FIELD(PyCodeObject, co_executors);
    FIELD(PyCodeObject, _co_cached);
    FIELD(PyCodeObject, _co_instrumentation_version);
    FIELD(PyCodeObject, _co_monitoring);
    FIELD(PyCodeObject, _co_firsttraceable);
    FIELD(PyCodeObject, co_extra);
    FIELD(PyCodeObject, co_code_adaptive);
    /* The CO_* flags are public too: a new flag must not reuse a bit. */
    printf("CO_OPTIMIZED=0x%x CO_NEWLOCALS=0x%x CO_VARARGS=0x%x "
           "CO_VARKEYWORDS=0x%x CO_NESTED=0x%x CO_GENERATOR=0x%x "
           "CO_COROUTINE=0x%x CO_ITERABLE_COROUTINE=0x%x "
           "CO_ASYNC_GENERATOR=0x%x\n",
           CO_OPTIMIZED, CO_NEWLOCALS, CO_VARARGS, CO_VARKEYWORDS, CO_NESTED,
           CO_GENERATOR, CO_COROUTINE, CO_ITERABLE_COROUTINE,
           CO_ASYNC_GENERATOR);

    /* Type objects */
    SIZE(PyTypeObject);
    FIELD(PyTypeObject, tp_name);
    FIELD(PyTypeObject, tp_basicsize);
    FIELD(PyTypeObject, tp_itemsize);
    FIELD(PyTypeObject, tp_dealloc);
    FIELD(PyTypeObject, tp_vectorcall_offset);
    FIELD(PyTypeObject, tp_as_async);
    FIELD(PyTypeObject, tp_repr);
    FIELD(PyTypeObject, tp_as_number);
    FIELD(PyTypeObject, tp_as_sequence);
    FIELD(PyTypeObject, tp_as_mapping);
    FIELD(PyTypeObject, tp_hash);
    FIELD(PyTypeObject, tp_call);
    FIELD(PyTypeObject, tp_str);
    FIELD(PyTypeObject, tp_getattro);
    FIELD(PyTypeObject, tp_setattro);
    FIELD(PyTypeObject, tp_as_buffer);
    FIELD(PyTypeObject, tp_flags);
    FIELD(PyTypeObject, tp_doc);
    FIELD(PyTypeObject, tp_traverse);
    FIELD(PyTypeObject, tp_clear);
    FIELD(PyTypeObject, tp_richcompare);
    FIELD(PyTypeObject, tp_weaklistoffset);
    FIELD(PyTypeObject, tp_iter);
    FIELD(PyTypeObject, tp_iternext);
    FIELD(PyTypeObject, tp_methods);
    FIELD(PyTypeObject, tp_members);
    FIELD(PyTypeObject, tp_getset);
    FIELD(PyTypeObject, tp_base);
    FIELD(PyTypeObject, tp_dict);
    FIELD(PyTypeObject, tp_descr_get);
    FIELD(PyTypeObject, tp_descr_set);
    FIELD(PyTypeObject, tp_dictoffset);
    FIELD(PyTypeObject, tp_init);
    FIELD(PyTypeObject, tp_alloc);
    FIELD(PyTypeObject, tp_new);
    FIELD(PyTypeObject, tp_free);
    FIELD(PyTypeObject, tp_is_gc);
    FIELD(PyTypeObject, tp_bases);
    FIELD(PyTypeObject, tp_mro);
    FIELD(PyTypeObject, tp_cache);
    FIELD(PyTypeObject, tp_subclasses);
    FIELD(PyTypeObject, tp_weaklist);
    FIELD(PyTypeObject, tp_del);
    FIELD(PyTypeObject, tp_version_tag);
    FIELD(PyTypeObject, tp_finalize);
    FIELD(PyTypeObject, tp_vectorcall);
    FIELD(PyTypeObject, tp_watched);
    FIELD(PyTypeObject, tp_versions_used);
    SIZE(PyHeapTypeObject);
    SIZE(PyAsyncMethods);
    FIELD(PyAsyncMethods, am_await);
    FIELD(PyAsyncMethods, am_aiter);
    FIELD(PyAsyncMethods, am_anext);
    FIELD(PyAsyncMethods, am_send);
    printf("Py_TPFLAGS_HAVE_GC=0x%lx Py_TPFLAGS_BASETYPE=0x%lx\n",
           (unsigned long)Py_TPFLAGS_HAVE_GC, (unsigned long)Py_TPFLAGS_BASETYPE);

    /* Thread state: extensions (Cython among them) read some fields. */
    SIZE(PyThreadState);
    FIELD(PyThreadState, prev);
    FIELD(PyThreadState, next);
    FIELD(PyThreadState, interp);
    FIELD(PyThreadState, eval_breaker);
    FIELD(PyThreadState, _status);
    FIELD(PyThreadState, _whence);
    FIELD(PyThreadState, state);
    FIELD(PyThreadState, py_recursion_remaining);
    FIELD(PyThreadState, py_recursion_limit);
    FIELD(PyThreadState, c_recursion_remaining);
    FIELD(PyThreadState, recursion_headroom);
    FIELD(PyThreadState, tracing);
    FIELD(PyThreadState, what_event);
    FIELD(PyThreadState, current_frame);
    FIELD(PyThreadState, c_profilefunc);
    FIELD(PyThreadState, c_tracefunc);
    FIELD(PyThreadState, c_profileobj);
    FIELD(PyThreadState, c_traceobj);
    FIELD(PyThreadState, current_exception);
    FIELD(PyThreadState, exc_info);
    FIELD(PyThreadState, dict);
    FIELD(PyThreadState, gilstate_counter);
    FIELD(PyThreadState, async_exc);
    FIELD(PyThreadState, thread_id);
    FIELD(PyThreadState, native_thread_id);
    FIELD(PyThreadState, delete_later);
    FIELD(PyThreadState, critical_section);
    FIELD(PyThreadState, coroutine_origin_tracking_depth);
    FIELD(PyThreadState, async_gen_firstiter);
    FIELD(PyThreadState, async_gen_finalizer);
    FIELD(PyThreadState, context);
    FIELD(PyThreadState, context_ver);
    FIELD(PyThreadState, id);
    FIELD(PyThreadState, datastack_chunk);
    FIELD(PyThreadState, datastack_top);
    FIELD(PyThreadState, datastack_limit);
    FIELD(PyThreadState, exc_state);
    FIELD(PyThreadState, previous_executor);
    FIELD(PyThreadState, dict_global_version);
    FIELD(PyThreadState, threading_local_key);
    FIELD(PyThreadState, threading_local_sentinel);

    /* Other structs that extension modules fill in or read. */
    SIZE(PyMethodDef);
    SIZE(PyMemberDef);
    SIZE(PyGetSetDef);
    SIZE(PyModuleDef);
    SIZE(PyModuleDef_Base);
    SIZE(PyType_Spec);
    SIZE(PyType_Slot);
    SIZE(Py_buffer);
    SIZE(PyBufferProcs);
    SIZE(PyNumberMethods);
    SIZE(PySequenceMethods);
    SIZE(PyMappingMethods);
    SIZE(PyTupleObject);
    SIZE(PyListObject);
    SIZE(PyBytesObject);
    SIZE(PyFloatObject);
    SIZE(PyASCIIObject);
    SIZE(PyCompactUnicodeObject);
    SIZE(PyUnicodeObject);
    SIZE(PyDictObject);
    SIZE(PyFunctionObject);
    SIZE(PyCFunctionObject);
    SIZE(PyCMethodObject);
    SIZE(PyMethodObject);
    SIZE(PyBaseExceptionObject);
    SIZE(PyStopIterationObject);
    SIZE(PyCompilerFlags);
    SIZE(PyConfig);
    SIZE(PyPreConfig);
    SIZE(PyStatus);
    return 0;
}
