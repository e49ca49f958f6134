//! The [`std::task::Waker`] of a native coroutine.
//!
//! Each coroutine owns one [`WakeSignal`] (shared through an `Arc` with
//! every clone of its waker, which Rust code may send to any thread).  A
//! wake-up does two things:
//!
//! 1. it sets a flag, so that a wake-up that happens *during* a poll (or
//!    between the poll and the suspension) is never lost: the coroutine then
//!    suspends with a bare `yield None` instead of waiting (see
//!    [`crate::runtime`]);
//! 2. it runs the *hook* armed by the event-loop glue when the coroutine
//!    suspended waiting for this waker (for asyncio: complete the future the
//!    coroutine awaits, with `loop.call_soon_threadsafe`).
//!
//! The hook runs on the waking thread, after the lock is released, so a
//! thread that wakes while the coroutine's step holds the GIL waits for
//! the GIL without holding anything the step needs.

use std::sync::Arc;
use std::task::{Wake, Waker};

// The handshake of `WakeSignal` runs on loom's atomics and mutex under
// `--cfg loom` (the model in `loom_model` below); `LazyWaker`, used only by
// the owning step, keeps std's.
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, Ordering, fence};
#[cfg(loom)]
use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, Ordering, fence};
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};

/// What to run when the coroutine is woken while it waits in its runtime
/// (armed by the runtime glue when the coroutine suspends): consumed by
/// the first wake-up, or handed back by [`WakeSignal::reset`].
pub trait Hook: Send + 'static {
    /// Run it, on the waking thread, with no lock held.
    fn run(self);
}

/// A hook as a closure (the tests' and the model's; the runtime's own,
/// [`crate::runtime::WakeHook`], is kept inline in the signal: no
/// allocation of its own).
pub type BoxHook = Box<dyn FnOnce() + Send>;

impl Hook for BoxHook {
    fn run(self) {
        self()
    }
}

/// Shared state behind a native coroutine's waker.
pub struct WakeSignal<H: Hook = crate::runtime::WakeHook> {
    woken: AtomicBool,
    /// Whether `hook` may hold a hook: lets [`reset`](Self::reset) skip
    /// the lock when none was armed (the common case).
    armed: AtomicBool,
    hook: Mutex<Option<H>>,
}

impl<H: Hook> Default for WakeSignal<H> {
    fn default() -> Self {
        WakeSignal {
            woken: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            hook: Mutex::new(None),
        }
    }
}

impl<H: Hook> WakeSignal<H> {
    fn lock(&self) -> MutexGuard<'_, Option<H>> {
        // A poisoned lock only means a hook panicked elsewhere: the data (an
        // Option) is still coherent.
        self.hook.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget earlier wake-ups and any armed hook (called before each poll).
    /// Returns the hook that was armed, so that the caller drops it where it
    /// chooses (it may own Python objects).
    pub fn reset(&self) -> Option<H> {
        self.woken.store(false, Ordering::Release);
        // Only the coroutine's own step arms a hook, and it runs this
        // reset: so a hook armed by an earlier step is seen here, unless a
        // wake-up took it meanwhile (then there is nothing to take).
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let hook = self.lock().take();
        self.armed.store(false, Ordering::Release);
        hook
    }

    /// Record a wake-up without running any hook (used when a wake-up
    /// recorded elsewhere, see [`LazyWaker`], moves into this signal).
    pub fn mark_woken(&self) {
        self.woken.store(true, Ordering::Release);
    }

    /// Whether the waker was woken since the last [`reset`](Self::reset) /
    /// `take_woken` (and clear the flag).
    pub fn take_woken(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }

    /// Arm `hook` to run on the next wake-up, unless a wake-up already
    /// happened since the last reset: then the flag is consumed and the hook
    /// handed back (`Err`), and the caller must not wait.
    pub fn arm(&self, hook: H) -> Result<(), H> {
        let mut slot = self.lock();
        // No early check of `woken` before arming: the check after the
        // fence below sees every wake-up that happened before it (the
        // runtime has just called `take_woken` anyway).  An early swap would
        // also be a store that loom cannot order against a concurrent
        // wake-up's (its modification order is partial), a false alarm.
        *slot = Some(hook);
        self.armed.store(true, Ordering::Relaxed);
        // The other half of the handshake in `wake`: each side stores its
        // flag, then a SeqCst fence, then reads the other's flag.  The two
        // fences are ordered one way or the other, so at least one side
        // sees the other's store: a wake-up that read `armed` as false
        // (and so took no lock and ran no hook) set `woken`, which is seen
        // here.  (Dekker's pattern with fences; SeqCst accesses alone
        // would do in C++ too, but loom models SeqCst accesses as AcqRel
        // only and SeqCst fences exactly.)
        fence(Ordering::SeqCst);
        if self.woken.swap(false, Ordering::AcqRel) {
            self.armed.store(false, Ordering::Relaxed);
            return Err(slot.take().expect("armed above"));
        }
        Ok(())
    }

    /// A wake-up (what every waker of this signal does): set the flag, and
    /// run the armed hook, if any, once, after releasing the lock.
    pub fn wake_up(&self) {
        self.woken.store(true, Ordering::Release);
        // See `arm`: store, fence, then read the other side's flag.
        fence(Ordering::SeqCst);
        // No hook armed (the common case: a wake-up during the poll, e.g.
        // `yield_now`): the flag is all; `arm` sees it (see there).
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let hook = {
            let mut slot = self.lock();
            self.armed.store(false, Ordering::Relaxed);
            slot.take()
        };
        if let Some(hook) = hook {
            hook.run();
        }
    }
}

impl<H: Hook> Wake for WakeSignal<H> {
    fn wake(self: Arc<Self>) {
        self.wake_up();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_up();
    }
}

/// The waker of one native coroutine, kept inline in its state: the shared
/// [`WakeSignal`] (a heap allocation) is made only when a future keeps a
/// clone of the waker or the coroutine suspends waiting for it.  A future
/// that completes without doing either (most that await only Python
/// objects) costs no allocation.
///
/// During a poll the future sees either the waker of the shared signal
/// (once it exists) or a *borrowed* waker pointing at this value (made by
/// [`crate::raw::with_lazy_waker`]): its `wake_by_ref` sets a flag here
/// (or wakes the shared signal if a clone made it meanwhile), its `clone`
/// makes the shared signal and returns its waker.  The borrowed waker
/// cannot outlive the poll, so after the poll the flag only moves, into
/// the shared signal ([`signal`](Self::signal)).
#[derive(Default)]
pub struct LazyWaker {
    /// The shared signal once made; before, whether the borrowed waker was
    /// woken (one word: see `crate::raw::FlaggedArc`).
    shared: crate::raw::FlaggedArc<WakeSignal>,
}

impl LazyWaker {
    fn shared(&self) -> &WakeSignal {
        let (signal, woken) = self.shared.get_or_init(Default::default);
        // A wake-up of the borrowed waker before the signal existed.
        if woken {
            signal.mark_woken();
        }
        signal
    }

    /// The shared signal (made now if needed), holding every wake-up seen
    /// so far: what the runtime arms when the coroutine suspends.
    pub fn signal(&self) -> &WakeSignal {
        self.shared()
    }

    /// An owned waker (of the shared signal, made now if needed).
    pub fn to_waker(&self) -> Waker {
        self.shared();
        Waker::from(self.existing().expect("made above"))
    }

    /// A new reference to the shared signal, if it exists: a poll then
    /// uses its waker, so that `Waker::will_wake` holds between polls.
    #[inline]
    pub fn existing(&self) -> Option<Arc<WakeSignal>> {
        self.shared.get_arc()
    }

    /// `wake_by_ref` of the borrowed waker.
    pub fn wake_by_ref(&self) {
        if let Err(signal) = self.shared.set_flag() {
            signal.wake_up();
        }
    }

    /// Forget earlier wake-ups and any armed hook, before a poll (see
    /// [`WakeSignal::reset`]).
    #[inline]
    pub fn reset(&self) -> Option<crate::runtime::WakeHook> {
        // Neither a wake-up nor a signal (the usual case): nothing to
        // forget, and no compare-and-swap.
        if self.shared.is_clear() {
            return None;
        }
        self.shared.clear_flag().and_then(|signal| signal.reset())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Waker;

    #[test]
    fn wake_before_arm_is_not_lost() {
        let signal = Arc::new(WakeSignal::<BoxHook>::default());
        Waker::from(signal.clone()).wake_by_ref();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let armed = signal.arm(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(armed.is_err(), "the early wake-up must refuse the hook");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn wake_after_arm_runs_hook_once() {
        let signal = Arc::new(WakeSignal::<BoxHook>::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        assert!(
            signal
                .arm(Box::new(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                }))
                .is_ok()
        );
        let waker = Waker::from(signal.clone());
        let w2 = waker.clone();
        std::thread::spawn(move || w2.wake()).join().unwrap();
        waker.wake_by_ref();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert!(signal.take_woken());
    }

    #[test]
    fn reset_returns_and_disarms_hook() {
        let signal = Arc::new(WakeSignal::<BoxHook>::default());
        assert!(signal.arm(Box::new(|| panic!("must not run"))).is_ok());
        assert!(signal.reset().is_some());
        Waker::from(signal.clone()).wake();
        assert!(signal.take_woken());
    }

    #[test]
    fn lazy_waker_keeps_wake_ups() {
        // Woken through the borrowed waker before the shared signal
        // exists: the wake-up moves into the signal.
        let lazy = LazyWaker::default();
        crate::raw::with_lazy_waker(&lazy, |w| w.wake_by_ref());
        assert!(lazy.existing().is_none(), "no allocation for a wake-up");
        assert!(lazy.signal().take_woken());
        // Once the signal exists the poll uses its waker, and a clone made
        // through the borrowed waker is the signal's.
        let lazy = LazyWaker::default();
        let clone = crate::raw::with_lazy_waker(&lazy, |w| w.clone());
        assert!(lazy.existing().is_some());
        crate::raw::with_lazy_waker(&lazy, |w| assert!(w.will_wake(&clone)));
        std::thread::spawn(move || clone.wake()).join().unwrap();
        assert!(lazy.signal().take_woken());
        // reset forgets a wake-up, recorded locally or in the signal.
        crate::raw::with_lazy_waker(&lazy, |w| w.wake_by_ref());
        drop(lazy.reset());
        assert!(!lazy.signal().take_woken());
    }
}

/// The arm/wake handshake under loom's model checker: every interleaving
/// (and every value a weak memory model lets a load read) of the
/// coroutine's thread arming (or resetting) against wakers on other
/// threads.  Run by `scripts/test` (phase `loom`):
/// `RUSTFLAGS="--cfg loom" cargo test -p pycoro --lib --release loom`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;
    use loom::thread;

    fn counting_hook(ran: &Arc<AtomicUsize>) -> BoxHook {
        let ran = ran.clone();
        Box::new(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })
    }

    /// A wake-up racing the suspension is never lost: either `arm` sees it
    /// (and hands the hook back: the coroutine does not wait), or the
    /// waker runs the hook, exactly once.
    #[test]
    fn loom_wake_racing_arm_is_never_lost() {
        loom::model(|| {
            let signal = Arc::new(WakeSignal::<BoxHook>::default());
            let ran = Arc::new(AtomicUsize::new(0));
            let waker = {
                let signal = signal.clone();
                thread::spawn(move || signal.wake_up())
            };
            let armed = signal.arm(counting_hook(&ran));
            waker.join().unwrap();
            let ran = ran.load(Ordering::SeqCst);
            match armed {
                Err(_hook) => assert_eq!(ran, 0, "a refused hook ran"),
                Ok(()) => assert_eq!(ran, 1, "armed, woken, and the hook never ran"),
            }
        });
    }

    /// Two wakers after arming: the hook runs once.
    #[test]
    fn loom_two_wakers_run_the_hook_once() {
        loom::model(|| {
            let signal = Arc::new(WakeSignal::<BoxHook>::default());
            let ran = Arc::new(AtomicUsize::new(0));
            assert!(signal.arm(counting_hook(&ran)).is_ok());
            let wakers: Vec<_> = (0..2)
                .map(|_| {
                    let signal = signal.clone();
                    thread::spawn(move || signal.wake_up())
                })
                .collect();
            for w in wakers {
                w.join().unwrap();
            }
            assert_eq!(ran.load(Ordering::SeqCst), 1);
        });
    }

    /// The next poll's reset racing a wake-up: the armed hook is either
    /// taken back by the reset or run by the waker, never both, never
    /// neither.
    #[test]
    fn loom_reset_racing_wake_takes_or_runs_the_hook_once() {
        loom::model(|| {
            let signal = Arc::new(WakeSignal::<BoxHook>::default());
            let ran = Arc::new(AtomicUsize::new(0));
            assert!(signal.arm(counting_hook(&ran)).is_ok());
            let waker = {
                let signal = signal.clone();
                thread::spawn(move || signal.wake_up())
            };
            let taken = signal.reset().is_some();
            waker.join().unwrap();
            let ran = ran.load(Ordering::SeqCst);
            assert_eq!(usize::from(taken) + ran, 1, "taken: {taken}, ran: {ran}");
        });
    }
}
