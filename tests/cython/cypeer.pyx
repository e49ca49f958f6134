# cython: language_level=3
# A second Cython module for tests/test_cython.py: delegation to the
# coroutines of another module (cyprobe, compiled with or without native
# frames, or its async def twin).  Also valid Python: the twin of this file.


def delegate_to(c):
    # Cython accepts a coroutine here, as a generator that types.coroutine()
    # marked does (it cannot tell whether one did)
    return (yield from c)


async def await_it(c):
    return await c


async def aiter_of(c):
    # An async generator, so that this module shares Cython's types with
    # cyprobe on 3.13t too: there Cython 3.3.1 keeps the shared types of a
    # module with async generators in another module (_cython_3_3_1nofreelists)
    # than those of one without, and a coroutine of one is not Cython's own
    # type to the other (with or without native frames).
    yield await c
