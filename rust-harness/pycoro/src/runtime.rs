//! How a native coroutine suspends in whatever drives it, and small futures
//! built on that ([`yield_now`], [`sleep`]).
//!
//! # Suspending when the Rust future is `Pending`
//!
//! The C API knows no event loop: a step can only YIELD a value or AWAIT an
//! awaitable.  When a poll returns `Pending` without asking to await a
//! Python object (see [`crate::coroutine::py_await`]), the harness picks:
//!
//! 1. **Already woken** (the waker fired during the poll, e.g.
//!    [`yield_now`], or a fast thread): a *schedule point*.  Under trio,
//!    `AWAIT trio.lowlevel.checkpoint()` (trio refuses bare yields; this is
//!    `await trio.sleep(0)`); anywhere else `YIELD None`, a *bare yield*: an
//!    asyncio `Task` reschedules a coroutine that yields `None` at once
//!    (`call_soon(__step)`), a bare `send(None)` loop simply sends again, so
//!    the coroutine is polled again on the next loop iteration.  This is
//!    exactly what `await asyncio.sleep(0)` does.
//! 2. **In a trio task**: `AWAIT trio.lowlevel.wait_task_rescheduled(..)`,
//!    with the waker armed to reschedule the task through
//!    `TrioToken.run_sync_soon` from whatever thread wakes it (see
//!    `runtime/trio.rs`); a trio cancellation aborts the wait and raises
//!    `trio.Cancelled` at this await.
//! 3. **An asyncio loop is running in this thread** (asyncio itself, uvloop,
//!    anyio's asyncio backend: `asyncio.events._get_running_loop()`):
//!    create `fut = loop.create_future()`, arm the waker to run
//!    `loop.call_soon_threadsafe(_wake, fut)` (where `_wake` sets the result
//!    unless the future is already done or cancelled) from whatever thread
//!    wakes it, and AWAIT it (through a generator that does what the pure
//!    Python `Future.__await__` does: see `wait_future` in
//!    `runtime/glue.py`).  The Task then sleeps until the Rust side wakes
//!    it, and `Task.cancel()` reaches the coroutine as a `CancelledError`
//!    thrown at this await.
//! 4. **Nothing runs** (a bare `send(None)` loop, or a runtime the harness
//!    does not know): `YIELD None` and poll again on the next `send`.  A bare
//!    loop therefore busy-polls; that is the price of needing no runtime.
//!
//! In cases 2 and 3 the waker does not call the runtime itself: the thread
//! that wakes may be a Rust thread, and Python code that releases the GIL
//! there (both `call_soon_threadsafe` and `run_sync_soon` write to a
//! socket) gets that thread ended by `pthread_exit()` if the interpreter
//! starts finalizing meanwhile, which aborts the process (the forced
//! unwind cannot cross Rust frames).  The waker only puts the call on a
//! queue (`SimpleQueue.put`, which keeps the GIL) served by a daemon
//! Python thread, `pycoro-waker`, started from the loop's thread (see
//! `poster` in `runtime/glue.py`).  This adds one thread hop to a wake-up
//! from another thread; the table below was measured before it.
//!
//! An exception thrown in at cases 1-4 (a cancellation, `throw()`,
//! `close()`) reaches the Rust future if it waits through
//! [`crate::interruptible`]; otherwise it propagates at once and the
//! future is dropped (see [`crate::interrupt`]).
//!
//! # How the runtime is found
//!
//! [`current`] answers, in this order, with no import and nothing named in
//! the C patch:
//! - **trio** if `trio` is in `sys.modules` and
//!   `trio.lowlevel.in_trio_task()` is true (checked first: in trio's guest
//!   mode an asyncio loop runs too, but the task is trio's);
//! - **asyncio** if `asyncio` is in `sys.modules` and
//!   `asyncio.events._get_running_loop()` returns a loop (any
//!   `AbstractEventLoop`, so uvloop is asyncio here);
//! - **none** otherwise.
//!
//! This is the answer `sniffio.current_async_library()` gives for these
//! runtimes (anyio runs on one of the two), without depending on sniffio
//! and at the cost of one dict lookup per suspension for a runtime never
//! imported.  A new runtime is one more branch in `suspend` and one more
//! kind of `WakeHook` call.
//!
//! ## Measured trade-offs
//!
//! `benches/wake.py` (release build of the probe, the patched
//! CPython 3.13.5 release build, 2-core build machine; best of 5 runs of
//! 20,000 steps, per step):
//!
//! | path                                             | native   | `async def` |
//! |--------------------------------------------------|---------:|------------:|
//! | asyncio, bare yield (`yield_now` / `sleep(0)`)    | 2.3 µs   | 2.6 µs      |
//! | asyncio, woken from another thread (future path) | 10.0-10.5 µs | 18.8-19.7 µs |
//! | bare `send(None)` loop, bare yield               | 0.16 µs  | 0.28 µs     |
//!
//! The `async def` column of the thread row creates the future and has a
//! Python thread complete it with `call_soon_threadsafe`, as the harness
//! does from Rust.  So: a bare yield costs what `await asyncio.sleep(0)`
//! costs (one `call_soon` and one Task step; the step itself is cheaper
//! than the bytecode it replaces); a wake-up from another thread costs
//! about 4x a bare yield, dominated by the self-pipe write that wakes the
//! selector, and the harness pays it only when the wake-up had not happened
//! yet when the coroutine suspended (then the loop sleeps in `select`
//! instead of busy-polling).  Always bare-yielding would busy-poll an idle
//! loop at 100% CPU; always awaiting a future would make `yield_now` ~4x
//! slower: hence the flag check first.
//!
//! ```
//! use pyo3::prelude::*;
//! use pycoro::{NativeCoroutine, coroutine_def};
//!
//! Python::attach(|py| {
//!     let coro = NativeCoroutine::new(py, coroutine_def!("three"), async {
//!         for _ in 0..3 {
//!             pycoro::yield_now().await;
//!         }
//!         Ok(Python::attach(|py| py.None()))
//!     })
//!     .unwrap();
//!     // A bare send loop: three bare yields, then StopIteration.
//!     let mut yields = 0;
//!     while coro.call_method1("send", (py.None(),)).is_ok() {
//!         yields += 1;
//!     }
//!     assert_eq!(yields, 3);
//! });
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::waker::WakeSignal;

mod trio;

/// How the coroutine suspends after a `Pending` poll.
pub(crate) enum Suspend {
    /// `YIELD None`: poll again on the next resumption.
    BareYield,
    /// `AWAIT` this awaitable, which completes when the waker fires.
    Await(Py<PyAny>),
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static WAKE_CALLBACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static WAIT_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static POSTER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CALL_SOON: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Complete an asyncio future unless it is done (or cancelled) already.
#[pyfunction]
#[pyo3(name = "_pycoro_wake")]
fn wake_future(fut: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = fut.py();
    if !fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        fut.call_method1(intern!(py, "set_result"), (py.None(),))?;
    }
    Ok(())
}

/// `asyncio.events._get_running_loop()`, or `None` if asyncio was never
/// imported (then no asyncio loop can be running).
fn running_asyncio_loop(py: Python<'_>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let get = match GET_RUNNING_LOOP.get(py) {
        Some(f) => f.bind(py).clone(),
        None => {
            if trio::sys_modules(py)?
                .get_item(intern!(py, "asyncio"))?
                .is_none()
            {
                return Ok(None);
            }
            let f = py.import("asyncio.events")?.getattr("_get_running_loop")?;
            GET_RUNNING_LOOP.get_or_init(py, || f.clone().unbind());
            f
        }
    };
    let event_loop = get.call0()?;
    Ok((!event_loop.is_none()).then_some(event_loop))
}

/// The runtime driving the code that runs now (see the module docs).
#[derive(Debug)]
pub enum Runtime<'py> {
    /// In a trio task.
    Trio,
    /// In a task (or callback) of this running asyncio event loop.
    Asyncio(Bound<'py, PyAny>),
    /// No runtime the harness knows: a bare `send()` loop, or none.
    None,
}

/// Find the runtime driving the caller (see [How the runtime is
/// found](self#how-the-runtime-is-found)).
///
/// ```
/// use pyo3::prelude::*;
/// use pycoro::runtime::{current, Runtime};
///
/// Python::attach(|py| {
///     assert!(matches!(current(py).unwrap(), Runtime::None));
/// });
/// ```
pub fn current(py: Python<'_>) -> PyResult<Runtime<'_>> {
    if trio::current(py)?.is_some() {
        return Ok(Runtime::Trio);
    }
    Ok(match running_asyncio_loop(py)? {
        Some(event_loop) => Runtime::Asyncio(event_loop),
        None => Runtime::None,
    })
}

/// `put` of the waker thread's queue (`poster` in glue.py), started from
/// the loop's thread when a coroutine first waits for a Rust waker.
fn poster(py: Python<'_>) -> PyResult<Py<PyAny>> {
    POSTER
        .get_or_try_init(py, || trio::glue(py, "poster").map(Bound::unbind))?
        .call0(py)
}

/// Decide how to suspend (see the module docs); arms `signal` when the
/// coroutine will wait for its waker.
///
/// Attribute names here (and in every path taken per suspension) go
/// through `intern!`: a `&str` name makes a new `str` per call, and
/// CPython's type attribute cache, whose slot is chosen by the name's
/// address, keeps a reference to each such string until evicted (up to
/// 4096 of them: the reference growth `tests/test_refleaks.py` once took
/// for a leak of Rust-thread wake-ups), and never hits.
pub(crate) fn suspend(py: Python<'_>, signal: &WakeSignal) -> PyResult<Suspend> {
    let trio = trio::current(py)?;
    if signal.take_woken() {
        return Ok(match trio {
            Some(trio) => Suspend::Await(trio.checkpoint(py)?),
            None => Suspend::BareYield,
        });
    }
    if let Some(trio) = trio {
        let waiter = trio.waiter(py)?;
        let hook = WakeHook {
            post: poster(py)?,
            call: Call::Trio {
                wake: waiter.getattr(py, intern!(py, "wake"))?,
            },
        };
        return match signal.arm(hook) {
            Ok(()) => Ok(Suspend::Await(
                waiter.call_method0(py, intern!(py, "wait"))?,
            )),
            // Woken between the poll and now: a schedule point only.
            Err(_hook) => Ok(Suspend::Await(trio.checkpoint(py)?)),
        };
    }
    let Some(event_loop) = running_asyncio_loop(py)? else {
        return Ok(Suspend::BareYield);
    };
    let fut = event_loop.call_method0(intern!(py, "create_future"))?;
    // Made now, so that the hook finds them (it runs where nothing may
    // be made: see `WakeHook::run`).
    WAKE_CALLBACK.get_or_try_init(py, || {
        wrap_pyfunction!(wake_future, py).map(|f| f.into_any().unbind())
    })?;
    CALL_SOON.get_or_try_init(py, || {
        trio::glue(py, "call_soon_threadsafe").map(Bound::unbind)
    })?;
    let hook = WakeHook {
        post: poster(py)?,
        call: Call::Asyncio {
            event_loop: event_loop.unbind(),
            fut: fut.clone().unbind(),
        },
    };
    match signal.arm(hook) {
        // Through `wait_future` (glue.py), not the future's own iterator,
        // so that a StopIteration thrown in is not taken for its result.
        Ok(()) => Ok(Suspend::Await(
            WAIT_FUTURE
                .get_or_try_init(py, || trio::glue(py, "wait_future").map(Bound::unbind))?
                .call1(py, (fut,))?,
        )),
        // Woken between the poll and now: do not wait.
        Err(_hook) => Ok(Suspend::BareYield),
    }
}

/// What a wake-up of a coroutine that waits in its runtime does: hand a
/// call to the waker thread (`post`, the `put` of its queue: see `poster`
/// in glue.py).  Kept inline in the coroutine's
/// [`WakeSignal`] (three references, no
/// allocation of its own); it holds the loop and the future rather than
/// bound methods, which would be Python objects made per suspension.
pub(crate) struct WakeHook {
    post: Py<PyAny>,
    call: Call,
}

/// The call a [`WakeHook`] posts.
enum Call {
    /// `loop.call_soon_threadsafe(_pycoro_wake, fut)`, made on the waker
    /// thread (`call_soon_threadsafe` in glue.py).
    Asyncio {
        event_loop: Py<PyAny>,
        fut: Py<PyAny>,
    },
    /// `waiter.wake()` of a `TrioWait`, on the waker thread.
    Trio { wake: Py<PyAny> },
}

impl crate::waker::Hook for WakeHook {
    fn run(self) {
        // Never run Python that releases the GIL on the waking thread (see
        // `poster` in glue.py): only hand the call to the waker thread.  A
        // closed loop, a finished trio run or interpreter shutdown has
        // nobody left to wake, so errors are dropped.
        let _ = Python::try_attach(move |py| {
            let WakeHook { post, call } = self;
            let _ = match call {
                Call::Asyncio { event_loop, fut } => {
                    // Both were made before the hook was armed.
                    let (Some(call_soon), Some(callback)) =
                        (CALL_SOON.get(py), WAKE_CALLBACK.get(py))
                    else {
                        return;
                    };
                    post.call1(py, ((call_soon, (event_loop, callback, fut)),))
                }
                Call::Trio { wake } => post.call1(py, ((wake, ()),)),
            };
            drop(post);
        });
    }
}

/// A future that is `Pending` exactly once, waking itself first: the
/// coroutine suspends with a bare yield, like `await asyncio.sleep(0)`.
/// The native frame reports the caller's line while suspended
/// (`#[track_caller]`, see [`crate::lines`]).
#[track_caller]
pub fn yield_now() -> YieldNow {
    YieldNow {
        yielded: false,
        location: Location::caller(),
    }
}

/// The future returned by [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
    location: &'static Location<'static>,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        crate::lines::record(self.location);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// What a [`Sleep`] shares with the timer queue.  Only the sleep's owner
/// and `fire` lock `waker`; a forked child's copy stays locked for good if
/// the parent's timer thread held it at the fork, so the owner never waits
/// for it (see `Sleep::poll`).
#[derive(Default)]
struct SleepShared {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl SleepShared {
    /// What the timer thread does at the deadline: mark done, wake.
    /// `done` first: a `waker` held by `fire` then means done, which lets
    /// the owner not wait for the lock.
    fn fire(&self) {
        self.done.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A pending [`Sleep`] in the timer thread's queue, ordered by deadline
/// (then by arrival, so that equal deadlines fire in order).
#[derive(Clone)]
struct Deadline {
    at: Instant,
    seq: u64,
    shared: Arc<SleepShared>,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The queue of the one timer thread (`pycoro-sleep`) that completes every
/// [`Sleep`] of the process: a min-heap of deadlines and a condition
/// variable the thread waits on until the earliest one (or a new, earlier
/// one).
///
/// A forked child has only the thread that called `fork()`: no timer
/// thread, and the queue's lock (as each sleep's, see [`SleepShared`])
/// in whatever state another thread left it.
/// So each process has timers of its own, found by its process id: the
/// first process's are [`Timers::get`]'s `OnceLock`, a child's hang off
/// its parent's `child` (a grandchild's off its parent's, and so on).
struct Timers {
    pid: u32,
    queue: Mutex<(BinaryHeap<Reverse<Deadline>>, u64)>,
    changed: Condvar,
    child: OnceLock<&'static Timers>,
}

impl Timers {
    /// This process's timers, with their thread started on first use.
    fn get() -> &'static Timers {
        static TIMERS: OnceLock<&'static Timers> = OnceLock::new();
        let pid = std::process::id();
        let mut timers = *TIMERS.get_or_init(|| Timers::start(pid, None));
        while timers.pid != pid {
            let parent = timers;
            timers = parent
                .child
                .get_or_init(|| Timers::start(pid, Some(parent)));
        }
        timers
    }

    /// New timers for process `pid` and their thread.  A child takes over
    /// the deadlines its parent's queue held at the fork (the child's copies
    /// of those sleeps wait for them, as an asyncio loop's timers go on in
    /// a child), unless the fork came while the parent's lock was held
    /// (only ever briefly): then those are lost, and nothing blocks on it.
    fn start(pid: u32, parent: Option<&Timers>) -> &'static Timers {
        let inherited = parent
            .and_then(|p| match p.queue.try_lock() {
                Ok(queue) => Some(queue),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            })
            .map(|queue| (queue.0.clone(), queue.1))
            .unwrap_or_default();
        let timers: &'static Timers = Box::leak(Box::new(Timers {
            pid,
            queue: Mutex::new(inherited),
            changed: Condvar::new(),
            child: OnceLock::new(),
        }));
        std::thread::Builder::new()
            .name("pycoro-sleep".into())
            .spawn(move || timers.run())
            .expect("cannot spawn the sleep thread");
        timers
    }

    /// Complete `shared` at `at`.
    fn add(&self, at: Instant, shared: Arc<SleepShared>) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let (heap, seq) = &mut *queue;
        *seq += 1;
        let earliest = heap.peek().is_none_or(|Reverse(d)| at < d.at);
        heap.push(Reverse(Deadline {
            at,
            seq: *seq,
            shared,
        }));
        drop(queue);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// The timer thread: fire each deadline when it comes (the wake-up
    /// outside the lock), sleep until the next one.
    fn run(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            match queue.0.peek() {
                None => {
                    queue = self.changed.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
                Some(Reverse(d)) if d.at <= now => {
                    let Some(Reverse(d)) = queue.0.pop() else {
                        continue;
                    };
                    drop(queue);
                    d.shared.fire();
                    drop(d);
                    queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                }
                Some(Reverse(d)) => {
                    let wait = d.at - now;
                    queue = self
                        .changed
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// A timer that a Rust thread completes after `duration`: the coroutine is
/// woken from a thread that is not the event loop's (one timer thread for
/// the process, `pycoro-sleep`, holding a queue of deadlines).  Meant for
/// tests and demonstrations, not as a timer wheel.  A forked child starts
/// a timer thread of its own on its first sleep, or on the first poll of a
/// sleep suspended at the fork, which then still ends at its deadline
/// (unless the fork came while the parent's queue was locked, for the
/// instant the timer thread or another sleep holds it: then it never
/// ends).  A sleep that the parent's timer thread was completing at the
/// fork is done in the child: polling it returns `Ready` and dropping it
/// does not wait for the lock that thread held.  The native frame
/// reports the caller's line while suspended (`#[track_caller]`, see
/// [`crate::lines`]).
#[track_caller]
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        duration: Some(duration),
        shared: Arc::new(SleepShared::default()),
        location: Location::caller(),
    }
}

/// The future returned by [`sleep`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    /// Until the first poll, which starts the timer (`None` after: a
    /// separate "started" flag would take 8 more bytes).
    duration: Option<Duration>,
    shared: Arc<SleepShared>,
    location: &'static Location<'static>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Never block on `waker`: a forked child's copy stays locked for
        // good if the parent's timer thread held it (in `fire`) at the fork.
        // Only `fire` can hold it while we poll, and `fire` stores `done`
        // before it locks: so held means done, once that store shows (in
        // the parent, `fire` may have only just locked), hence the retry.
        // No wake-up is lost: the waker is stored under the lock and `done`
        // read again after (`fire` either locks after us and takes this
        // waker, or stored `done` before we locked, and we see it).
        loop {
            if self.shared.done.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            let mut waker = match self.shared.waker.try_lock() {
                Ok(waker) => waker,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    std::thread::yield_now();
                    continue;
                }
            };
            *waker = Some(cx.waker().clone());
            break;
        }
        if self.shared.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        crate::lines::record(self.location);
        match self.duration.take() {
            Some(duration) => {
                // A deadline past what `Instant` holds never comes.
                if let Some(at) = Instant::now().checked_add(duration) {
                    Timers::get().add(at, self.shared.clone());
                }
            }
            // Started before a fork, polled in the child: its deadline is
            // in the queue the child's timers take over when they start.
            None => {
                Timers::get();
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // The queue may keep the shared state until the deadline: release
        // the waker (the coroutine's wake signal) now.  Unless `waker` is
        // locked: then by `fire` (we own this Sleep), which takes the waker
        // and wakes it itself (harmless once the coroutine is gone), or, in
        // a forked child, by a thread of the parent's that the child lacks,
        // and waiting would be forever.
        let waker = match self.shared.waker.try_lock() {
            Ok(mut waker) => waker.take(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        drop(waker);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::panic::AssertUnwindSafe;
    use std::sync::mpsc;
    use std::task::Wake;

    struct NoWake;

    impl Wake for NoWake {
        fn wake(self: Arc<Self>) {}
    }

    /// A sleep polled once: its waker is stored, its deadline (an hour
    /// away) queued.
    fn registered_sleep() -> Sleep {
        let mut sleep = sleep(Duration::from_secs(3600));
        let waker = Waker::from(Arc::new(NoWake));
        let pending = Pin::new(&mut sleep).poll(&mut Context::from_waker(&waker));
        assert!(pending.is_pending());
        sleep
    }

    /// Fork while another thread holds `sleep`'s waker lock (as the timer
    /// thread does in `fire`), so that the child's copy of the lock is held
    /// by a thread the child does not have, and run `child` on the sleep
    /// there.  The child must end with status 0; `alarm` ends it by SIGALRM
    /// if it blocks on that lock, instead of hanging the test.
    fn in_child_with_waker_locked(sleep: Sleep, child: fn(Sleep)) {
        let shared = sleep.shared.clone();
        let (locked_tx, locked) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = shared.waker.lock().unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        locked.recv().unwrap();
        // SAFETY: the child runs `child` (atomics, try_lock, frees) and
        // leaves by `_exit`, without going back to the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe { libc::alarm(10) };
            let ok = std::panic::catch_unwind(AssertUnwindSafe(|| child(sleep))).is_ok();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        release.send(()).unwrap();
        holder.join().unwrap();
        drop(sleep);
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            !(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM),
            "the child blocked on the sleep's waker lock (ended by SIGALRM)"
        );
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child failed (wait status {status:#x})"
        );
    }

    #[test]
    fn fired_at_fork_is_ready_and_drops_in_child() {
        in_child_with_waker_locked(registered_sleep(), |mut sleep| {
            // What `fire` had done before it locked.
            sleep.shared.done.store(true, Ordering::Release);
            let waker = Waker::from(Arc::new(NoWake));
            let ready = Pin::new(&mut sleep).poll(&mut Context::from_waker(&waker));
            assert!(ready.is_ready());
            drop(sleep);
        });
    }

    #[test]
    fn unfired_at_fork_drops_in_child() {
        in_child_with_waker_locked(registered_sleep(), drop);
    }

    #[test]
    fn poll_waits_out_a_brief_holder() {
        // In the parent `fire` holds the lock briefly, its store of `done`
        // not yet seen: a poll meanwhile gets Ready once it is (the retry),
        // neither Pending nor a wait for a lock that a child never gets.
        let mut sleep = registered_sleep();
        let shared = sleep.shared.clone();
        let (locked_tx, locked) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            let _held = shared.waker.lock().unwrap();
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            shared.done.store(true, Ordering::Release);
        });
        locked.recv().unwrap();
        let waker = Waker::from(Arc::new(NoWake));
        let ready = Pin::new(&mut sleep).poll(&mut Context::from_waker(&waker));
        assert!(ready.is_ready());
        holder.join().unwrap();
    }
}
