"""Event-loop glue of the pycoro harness.

Run once per interpreter by ``pycoro::runtime`` (``include_str!``) in a
private namespace: nothing here is importable, and nothing imports trio or
asyncio; the harness passes in the module it found already imported.
"""

import _thread
import types


@types.coroutine
def wait_future(fut):
    """Wait for an asyncio future: what the pure-Python ``Future.__await__``
    does.  Not ``fut.__await__()`` of the C future: when something is
    thrown into its iterator, a ``StopIteration`` comes back out of
    ``throw()`` and the awaiting frame takes it for the future's result, so
    the exception would be lost.  Thrown into this generator it is raised
    at the yield like in any other frame (PEP 479 then makes it a
    ``RuntimeError``, as for a coroutine awaiting ``asyncio.sleep(0)``)."""
    if not fut.done():
        fut._asyncio_future_blocking = True
        yield fut
    return fut.result()



class TrioWait:
    """Block the current trio task until ``wake()`` (from any thread).

    ``wait()`` is the awaitable the native coroutine AWAITs:
    ``trio.lowlevel.wait_task_rescheduled``, so the task sleeps in trio
    (no busy polling) and trio's cancellation reaches it through ``_abort``
    as ``trio.Cancelled`` raised at that await.  ``wake()`` is what the
    Rust waker runs: ``TrioToken.run_sync_soon`` is thread-safe, and the
    rescheduling itself then happens in trio's thread, and only if the task
    still waits in *this* wait (not if trio aborted it for a cancellation,
    or a wake-up already came).
    """

    __slots__ = ("_lowlevel", "_task", "_token", "_blocked")

    def __init__(self, lowlevel):
        self._lowlevel = lowlevel
        self._task = lowlevel.current_task()
        self._token = lowlevel.current_trio_token()
        self._blocked = True

    def wait(self):
        return self._lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, raise_cancel):
        self._blocked = False
        return self._lowlevel.Abort.SUCCEEDED

    def _reschedule(self):
        if self._blocked:
            self._blocked = False
            self._lowlevel.reschedule(self._task)

    def wake(self):
        # After trio.run() returned this raises RunFinishedError: nobody is
        # left to wake (the harness drops the error).
        self._token.run_sync_soon(self._reschedule)


# --- wake-ups from threads that are not Python's --------------------------
#
# A Rust thread that wakes a coroutine must not run Python code that
# releases the GIL (call_soon_threadsafe and run_sync_soon both write to a
# socket, which does): if the interpreter starts finalizing meanwhile, the
# thread is ended with pthread_exit() when it takes the GIL back, and that
# forced unwind cannot cross the Rust frames below it: the process aborts
# (seen at exit, most runs, with a sleep woken by a Rust thread just as
# asyncio.run() returned).  So the Rust thread only puts the call on a
# SimpleQueue (put() never releases the GIL), and a daemon Python thread
# makes it: at finalization that thread ends like any daemon thread.
#
# Except that on 3.13 a daemon thread still inside the interpreter when
# Py_Finalize() frees the thread states can read its own freed state while
# it releases the GIL (gh-124878, fixed in 3.14 by reference-counted thread
# states): AddressSanitizer saw it once in about a hundred exits with this
# thread waiting in get(), and a stock script of two daemon threads and a
# SimpleQueue does the same.  So an atexit callback, which runs before the
# thread states are freed, ends the thread and joins it.  Calls posted
# after that stay in the queue: at exit nothing is left to wake.

_posts = None
# Two threads' first suspensions may ask for the poster at once (a loop per
# thread on the free-threaded build): one waker thread, one atexit callback
# (3.13t's atexit.register() is not safe to call from two threads at once).
_posts_lock = _thread.allocate_lock()
_STOP = (None, None)


def _deliver(queue):
    while True:
        fn, args = queue.get()
        if fn is None:
            return
        try:
            fn(*args)
        except BaseException:  # noqa: BLE001
            # A closed loop or a finished trio run: nobody left to wake.
            pass
        del fn, args


def _forget_poster():
    global _posts, _posts_lock
    _posts = None
    # Another thread may have held it at the fork.
    _posts_lock = _thread.allocate_lock()


def _stop_deliverer(queue, thread):
    # The timeout: a call being made when the interpreter exits (it only
    # hands a callback to a loop) is not waited for longer than this.
    queue.put(_STOP)
    thread.join(timeout=1.0)


def poster():
    """``put`` of the queue served by the waker thread (started on first
    use; call from a thread where starting one is safe: the loop's).  The
    same bound method each time (kept, not made per call: every suspended
    coroutine's hook holds it)."""
    global _posts
    posts = _posts
    if posts is not None:
        return posts
    with _posts_lock:
        if _posts is None:
            import _queue
            import atexit
            import os
            import threading
            queue = _queue.SimpleQueue()
            thread = threading.Thread(target=_deliver, args=(queue,), name="pycoro-waker",
                                      daemon=True)
            thread.start()
            atexit.register(_stop_deliverer, queue, thread)
            _posts = queue.put
            if not getattr(poster, "_fork_hook", False):
                os.register_at_fork(after_in_child=_forget_poster)
                poster._fork_hook = True
        return _posts


def call_soon_threadsafe(loop, callback, fut):
    """What the waker thread runs for a coroutine woken in an asyncio loop
    (the hook holds the loop, not a bound method of it)."""
    loop.call_soon_threadsafe(callback, fut)
