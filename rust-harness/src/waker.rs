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
//!
//! ```
//! use std::sync::Arc;
//! use std::task::Waker;
//! use pycoro::waker::WakeSignal;
//!
//! let signal = Arc::new(WakeSignal::default());
//! let waker = Waker::from(signal.clone());
//! std::thread::spawn(move || waker.wake()).join().unwrap();
//! assert!(signal.take_woken());
//! assert!(!signal.take_woken());
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Wake;

/// What to run when the coroutine is woken while it waits in its runtime.
pub type WakeHook = Box<dyn FnOnce() + Send>;

/// Shared state behind a native coroutine's waker.
#[derive(Default)]
pub struct WakeSignal {
    woken: AtomicBool,
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
        let hook = self.lock().take();
        self.woken.store(false, Ordering::Release);
        hook
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
        if self.woken.swap(false, Ordering::AcqRel) {
            return Err(hook);
        }
        *slot = Some(hook);
        Ok(())
    }
}

impl Wake for WakeSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let hook = {
            let mut slot = self.lock();
            self.woken.store(true, Ordering::Release);
            slot.take()
        };
        if let Some(hook) = hook {
            hook();
        }
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
}
