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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Wake, Waker};

/// What to run when the coroutine is woken while it waits in its runtime.
pub type WakeHook = Box<dyn FnOnce() + Send>;

/// Shared state behind a native coroutine's waker.
#[derive(Default)]
pub struct WakeSignal {
    woken: AtomicBool,
    /// Whether `hook` may hold a hook: lets [`reset`](Self::reset) skip
    /// the lock when none was armed (the common case).
    armed: AtomicBool,
    hook: Mutex<Option<WakeHook>>,
}

impl WakeSignal {
    fn lock(&self) -> MutexGuard<'_, Option<WakeHook>> {
        // A poisoned lock only means a hook panicked elsewhere: the data (an
        // Option) is still coherent.
        self.hook.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget earlier wake-ups and any armed hook (called before each poll).
    /// Returns the hook that was armed, so that the caller drops it where it
    /// chooses (it may own Python objects).
    pub fn reset(&self) -> Option<WakeHook> {
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
    pub fn arm(&self, hook: WakeHook) -> Result<(), WakeHook> {
        let mut slot = self.lock();
        if self.woken.swap(false, Ordering::SeqCst) {
            return Err(hook);
        }
        *slot = Some(hook);
        self.armed.store(true, Ordering::SeqCst);
        // A wake-up that saw `armed` still false did not take the lock:
        // it only set `woken`, which is seen here (both sides store, then
        // load the other's flag, all SeqCst: at least one sees the other).
        if self.woken.swap(false, Ordering::SeqCst) {
            self.armed.store(false, Ordering::SeqCst);
            return Err(slot.take().expect("armed above"));
        }
        Ok(())
    }
}

impl Wake for WakeSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        // No hook armed (the common case: a wake-up during the poll, e.g.
        // `yield_now`): the flag is all; `arm` sees it (see there).
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let hook = {
            let mut slot = self.lock();
            self.armed.store(false, Ordering::SeqCst);
            slot.take()
        };
        if let Some(hook) = hook {
            hook();
        }
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
    woken: AtomicBool,
    shared: OnceLock<Arc<WakeSignal>>,
}

impl LazyWaker {
    fn shared(&self) -> &Arc<WakeSignal> {
        self.shared.get_or_init(Default::default)
    }

    /// The shared signal (made now if needed), holding every wake-up seen
    /// so far: what the runtime arms when the coroutine suspends.
    pub fn signal(&self) -> &Arc<WakeSignal> {
        let signal = self.shared();
        if self.woken.swap(false, Ordering::AcqRel) {
            signal.mark_woken();
        }
        signal
    }

    /// An owned waker (of the shared signal, made now if needed).
    pub fn to_waker(&self) -> Waker {
        Waker::from(self.shared().clone())
    }

    /// The shared signal, if it exists: a poll then uses its waker, so
    /// that `Waker::will_wake` holds between polls.
    #[inline]
    pub fn existing(&self) -> Option<&Arc<WakeSignal>> {
        self.shared.get()
    }

    /// `wake_by_ref` of the borrowed waker.
    pub fn wake_by_ref(&self) {
        match self.shared.get() {
            Some(signal) => signal.wake_by_ref(),
            None => self.woken.store(true, Ordering::Release),
        }
    }

    /// Forget earlier wake-ups and any armed hook, before a poll (see
    /// [`WakeSignal::reset`]).
    #[inline]
    pub fn reset(&self) -> Option<WakeHook> {
        self.woken.store(false, Ordering::Release);
        self.shared.get().and_then(|signal| signal.reset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Waker;

    #[test]
    fn wake_before_arm_is_not_lost() {
        let signal = Arc::new(WakeSignal::default());
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
        let signal = Arc::new(WakeSignal::default());
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
        let signal = Arc::new(WakeSignal::default());
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
