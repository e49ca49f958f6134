"""Event-loop glue of the pycoro harness.

Run once per interpreter by ``pycoro::runtime`` (``include_str!``) in a
private namespace: nothing here is importable, and nothing imports trio or
asyncio; the harness passes in the module it found already imported.
"""

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
