"""The async def and generator twins of test_native_coro's NativeThreadsTest
(one coroutine sent into from several threads at once, round after round),
run by ``scripts/sanitize --thread`` on the ThreadSanitizer build beside
the native tests: what stock 3.13t code reports when it is used that way.

Not a pytest file (no ``test_`` prefix): a script, run as
``python tests/tsan_twins.py``.  It fails if a send gets an error other
than the ones an ``async def`` gives when it is resumed while running.
"""

import threading
import types

ROUNDS = 300
EXPECTED = {"coroutine already executing", "generator already executing",
            "cannot reuse already awaited coroutine"}


@types.coroutine
def _yield(value):
    return (yield value)


def drive(c, nthreads=4):
    """Send None into `c` from `nthreads` threads at once until it ends;
    the errors seen, counted."""
    barrier = threading.Barrier(nthreads)
    done = threading.Event()
    errors = {}
    lock = threading.Lock()

    def run():
        while not done.is_set():
            try:
                barrier.wait(timeout=600)
            except threading.BrokenBarrierError:
                return
            try:
                c.send(None)
            except StopIteration:
                done.set()
            except (ValueError, RuntimeError) as e:
                with lock:
                    errors[str(e)] = errors.get(str(e), 0) + 1
                if isinstance(e, RuntimeError):
                    done.set()
            if done.is_set():
                barrier.abort()

    threads = [threading.Thread(target=run) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


async def coro():
    for _ in range(ROUNDS):
        await _yield(1)
    return "done"


async def outer():
    return await coro()


def gen():
    for _ in range(ROUNDS):
        yield 1
    return "done"


def main():
    for name, make in (("async def", coro), ("async def through await", outer),
                       ("generator", gen)):
        errors = drive(make())
        print(f"{name}: {errors or 'no error'}")
        assert set(errors) <= EXPECTED, errors


if __name__ == "__main__":
    main()
