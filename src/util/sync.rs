//! Locks that outlive a panic: the proxy's shared state (caches, counters, queues) stays valid
//! between any two statements, so a thread that panicked while holding a lock leaves nothing
//! half-done, and the next holder takes the data as it is instead of panicking in turn.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`], poisoned or not.
pub(crate) trait LockAnyway<T: ?Sized> {
    /// The guard, even after a panic in another holder.
    fn lock_anyway(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockAnyway<T> for Mutex<T> {
    fn lock_anyway(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`], poisoned or not.
pub(crate) trait RwLockAnyway<T: ?Sized> {
    /// The read guard, even after a panic in another holder.
    fn read_anyway(&self) -> RwLockReadGuard<'_, T>;
    /// The write guard, even after a panic in another holder.
    fn write_anyway(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockAnyway<T> for RwLock<T> {
    fn read_anyway(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_anyway(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}
