# cython: language_level=3
# The Cython probe of tests/test_cython.py.  This file is also valid Python:
# the tests import it a second time as plain Python (its async def / def
# twin, same file, same lines) and compare what Python sees of the two.
import asyncio
import sys


def in_trio():
    return "trio" in sys.modules and sys.modules["trio"].lowlevel.in_trio_task()


async def checkpoint():
    if in_trio():
        await sys.modules["trio"].lowlevel.checkpoint()
    else:
        await asyncio.sleep(0)


async def add(a, b=1, *rest, scale=1, **kw):
    await checkpoint()
    return (a + b) * scale


async def chain(n):
    if n == 0:
        await checkpoint()
        return 0
    return 1 + await chain(n - 1)


async def fail(msg):
    await checkpoint()
    raise ValueError(msg)


async def fail_deep():
    await fail("deep")


async def wait_for(event):
    await event.wait()
    return "woken"


async def catch(exc_type):
    try:
        await checkpoint()
        raise exc_type("caught")
    except exc_type as e:
        await checkpoint()
        return (type(e).__name__, type(sys.exception()).__name__)


def count(n):
    for i in range(n):
        yield i
    return "done"


def delegate(n):
    result = yield from count(n)
    yield result


async def acount(n):
    for i in range(n):
        await checkpoint()
        yield i


async def aconsume(n):
    total = []
    async for x in acount(n):
        total.append(x)
    return total


def self_cycle(box):
    # the generator's closure holds the generator: a reference cycle
    box.append(None)
    yield box


async def coro_cycle(box):
    box.append(None)
    await checkpoint()
    return box


def genexpr_sum(n):
    return sum(i * i for i in range(n))


class Greeter:
    def hello(self):
        yield super().__class__.__name__


async def call_blocked(fn):
    # fn runs while this frame runs (tests/test_cython.py's py-spy check);
    # on the line of an await, the line a native frame reports while it runs
    return fn(await checkpoint())
