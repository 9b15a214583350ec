//! Async locks keyed by a value (a session, a repository URL).
//!
//! Holders of different keys never wait for each other: unlike locks striped
//! over a fixed array, a session whose clone hangs on a silent repository
//! host holds up nobody else's turns or captures, whatever its id. An entry
//! exists only while some task holds or waits for its lock (it is removed
//! when the last one lets go, or gives up waiting), so the map never holds
//! more entries than there are such tasks.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// One key's lock and how many tasks hold it or wait for it.
#[derive(Debug)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

/// Async mutexes created on demand, one per key in use.
#[derive(Debug)]
pub struct KeyedLocks<K> {
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks { entries: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for `key`'s lock. Cancel-safe: a task that stops waiting leaves
    /// no entry behind.
    pub async fn lock(&self, key: K) -> KeyedGuard<'_, K> {
        let lock = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = entries
                .entry(key.clone())
                .or_insert_with(|| Entry { lock: Arc::new(tokio::sync::Mutex::new(())), users: 0 });
            entry.users += 1;
            Arc::clone(&entry.lock)
        };
        // Counted from here on: dropping the guard (held or not) uncounts.
        let mut guard = KeyedGuard { locks: self, key, held: None };
        guard.held = Some(lock.lock_owned().await);
        guard
    }

    /// How many keys have a holder or a waiter.
    pub fn in_use(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn release(&self, key: &K) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(key) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                entries.remove(key);
            }
        }
    }
}

/// A held (or, while [`KeyedLocks::lock`] waits, awaited) keyed lock.
#[derive(Debug)]
pub struct KeyedGuard<'a, K: Eq + Hash + Clone> {
    locks: &'a KeyedLocks<K>,
    key: K,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        // Unlock first, then uncount: a waiter that took the lock meanwhile
        // is counted, so the entry it uses stays.
        self.held = None;
        self.locks.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use std::time::Duration;

    use super::*;

    /// Long enough for a lock that should be free to be taken.
    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn different_keys_never_wait_for_each_other() {
        let locks = KeyedLocks::<u32>::default();
        let _one = locks.lock(1).await;
        let two = tokio::time::timeout(DEADLINE, locks.lock(2)).await;
        assert!(two.is_ok(), "key 2 waited for key 1");
        assert_eq!(locks.in_use(), 2);
    }

    #[tokio::test]
    async fn one_key_is_held_by_one_task_at_a_time_and_forgotten_when_unused() {
        let locks = KeyedLocks::<u32>::default();
        let first = locks.lock(7).await;
        // A waiter that gives up (here, at once) leaves the entry as it was.
        let busy = tokio::time::timeout(Duration::from_millis(1), locks.lock(7)).await;
        assert!(busy.is_err(), "key 7 was taken while held");
        assert_eq!(locks.in_use(), 1);
        drop(first);
        let second = tokio::time::timeout(DEADLINE, locks.lock(7)).await;
        assert!(second.is_ok(), "key 7 stayed locked after its holder let go");
        drop(second);
        assert_eq!(locks.in_use(), 0, "an unused key kept its entry");
    }
}
