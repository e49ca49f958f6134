"""Helpers shared by the differential tests: how two outcomes are compared
(``describe_exc``, ``norm``) and the bare ``send()`` drivers.

A native coroutine and its ``async def`` twin agree when these describe
their results and exceptions alike."""

import re


def send_loop(coro, limit=10_000_000):
    value = None
    for _ in range(limit):
        try:
            coro.send(value)
        except StopIteration as e:
            return e.value
    raise AssertionError(f"{coro!r} did not finish in {limit} sends")



def send_loop_trace(coro, limit=10_000):
    """Drive with bare send(None): (yielded values, outcome)."""
    yielded = []
    for _ in range(limit):
        try:
            yielded.append(coro.send(None))
        except StopIteration as e:
            return yielded, ("return", e.value)
        except BaseException as e:
            return yielded, ("raise", describe_exc(e))
    raise AssertionError(f"{coro!r} did not finish in {limit} sends")



_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def scrub(text):
    """Object addresses differ between two runs (trio names the task in
    Cancelled's message).  And PEP 479 names the frame StopIteration left:
    a native yield_now yields from the native coroutine itself, its twin
    from asyncio.sleep(0)'s generator, so one says "coroutine raised
    StopIteration" where the other says "generator raised StopIteration"
    (the same frame-shape allowance as the send-loop programs)."""
    text = text.replace("generator raised StopIteration", "coroutine raised StopIteration")
    return _ADDRESS.sub(" at 0x?", text)


def describe_exc(e, depth=2):
    """What must agree between two versions of an exception."""
    if e is None:
        return None
    ctx = e.__context__
    cause = e.__cause__
    sub = None
    if isinstance(e, BaseExceptionGroup):
        sub = tuple(describe_exc(x, depth) for x in e.exceptions)
    args = norm(e.args)
    if depth == 0:
        return (type(e), scrub(str(e)), args, sub)
    return (
        type(e),
        scrub(str(e)),
        args,
        describe_exc(ctx, depth - 1),
        describe_exc(cause, depth - 1),
        sub,
    )


def norm(v):
    """A comparable form of a result (exceptions described)."""
    if isinstance(v, BaseException):
        return ("exception", describe_exc(v))
    if isinstance(v, (list, tuple)):
        return type(v)(norm(x) for x in v)
    if isinstance(v, str):
        return scrub(v)
    return v
