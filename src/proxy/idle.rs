//! Waking a worker's followed connections so that each can look whether it should close at its
//! idle point: when its server stops taking new connections (drain, maint, down, removed) or
//! roundhouse is stopping.
//!
//! A connection waiting for its client's next request is parked with no timer due soon, so it
//! must be woken to notice. Each worker thread keeps the wakers of its own connections in a
//! thread-local list (a worker is a single-threaded event loop: no lock, no atomic), and the
//! control thread asks every worker to wake them all when a server starts leaving. That is rare;
//! each woken connection only reads an atomic of its server and goes back to sleep if it stays.

use std::cell::RefCell;
use std::task::Waker;

thread_local! {
    static REGISTRY: RefCell<Registry> = const {
        RefCell::new(Registry {
            wakers: Vec::new(),
            free: Vec::new(),
            stopping: false,
        })
    };
}

struct Registry {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
    /// This worker's connections close at their idle point: roundhouse is stopping.
    stopping: bool,
}

/// A connection's place in its worker's list, for as long as it lives.
pub struct Registration(usize);

impl Registration {
    /// Puts the waker of the current connection's task in this worker's list.
    pub fn new(waker: &Waker) -> Registration {
        REGISTRY.with_borrow_mut(|r| {
            let slot = match r.free.pop() {
                Some(i) => {
                    r.wakers[i] = Some(waker.clone());
                    i
                }
                None => {
                    r.wakers.push(Some(waker.clone()));
                    r.wakers.len() - 1
                }
            };
            Registration(slot)
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // the list may already be gone when the thread itself ends
        let _ = REGISTRY.try_with(|r| {
            let mut r = r.borrow_mut();
            r.wakers[self.0] = None;
            r.free.push(self.0);
        });
    }
}

/// Wakes every registered connection of this worker.
pub fn wake_all() {
    let wakers: Vec<Waker> = REGISTRY.with_borrow(|r| r.wakers.iter().flatten().cloned().collect());
    for w in wakers {
        w.wake();
    }
}

/// From now on this worker's connections close at their idle point; wakes them all.
pub fn stop() {
    REGISTRY.with_borrow_mut(|r| r.stopping = true);
    wake_all();
}

/// True once [`stop`] ran on this worker.
pub fn stopping() -> bool {
    REGISTRY.with_borrow(|r| r.stopping)
}
