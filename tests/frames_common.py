"""Shared helpers of the native-frame tests (test_frames, test_monitoring,
test_pyspy): the ``async def`` twins of the probes in
``rust-harness/pycoro_harness/src/frames.rs`` and the lines marked there.

The probes mark the lines the tests look for with ``// @line <tag>``
comments, so expected Rust lines are read from the source, never
hard-coded.
"""

import asyncio
import functools
import os
import re

import pycoro_harness as h

CO_NATIVE = 0x10000000


# --- async def twins (as the probes' doc comments give them) -------------

async def call(callback, *args):
    return callback(*args)


async def await_then_call(aw, cb):
    v = await aw
    return cb(v)


async def raise_value_error(msg):
    raise ValueError(msg)


async def two_yields():
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return 2


async def await_(aw):
    return await aw


TWINS = {
    "call": (h.call, call),
    "await_then_call": (h.await_then_call, await_then_call),
    "raise_value_error": (h.raise_value_error, raise_value_error),
    "two_yields": (h.two_yields, two_yields),
    "await_": (h.await_, await_),
}


def native_code(name):
    """The native code object of probe `name` (one per definition)."""
    c = TWINS[name][0](*_dummy_args(name))
    code = c.cr_code
    c.close()
    return code


def _dummy_args(name):
    return {
        "call": (print,),
        "await_then_call": (None, print),
        "raise_value_error": ("x",),
        "two_yields": (),
        "await_": (None,),
    }[name]


@functools.cache
def frames_rs():
    """Absolute path of frames.rs, as its code objects record it."""
    path = native_code("call").co_filename
    assert os.path.isabs(path), path
    return path


@functools.cache
def source_lines(path):
    with open(path) as f:
        return f.read().splitlines()


def marked(tag):
    """The 1-based line of frames.rs marked ``// @line <tag>``."""
    pattern = re.compile(r"//\s*@line\s+" + re.escape(tag) + r"\s*$")
    found = [i + 1 for i, line in enumerate(source_lines(frames_rs()))
             if pattern.search(line)]
    assert len(found) == 1, (tag, found)
    return found[0]


def source_line(lineno, path=None):
    return source_lines(path or frames_rs())[lineno - 1]


class Suspend:
    """An awaitable that suspends once with a bare yield of `value`, then
    returns `result` (or raises `exc`)."""

    def __init__(self, value=None, result=None, exc=None):
        self.value, self.result, self.exc = value, result, exc

    def __await__(self):
        yield self.value
        if self.exc is not None:
            raise self.exc
        return self.result


def drive(coro, sends=()):
    """Drive with a bare send loop: send None, then `sends`; return the
    outcome ("return", value) or ("raise", type, str)."""
    values = [None, *sends]
    try:
        for v in values:
            coro.send(v)
        while True:
            coro.send(None)
    except StopIteration as e:
        return ("return", e.value)
    except BaseException as e:
        return ("raise", type(e), str(e))
