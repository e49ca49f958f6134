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
