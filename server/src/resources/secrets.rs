//! Repository tokens: held in the server's memory only, never written.
//!
//! A `github_repository` resource's `authorization_token` is needed for one
//! thing, cloning (and re-cloning after a rotation). It is kept here, keyed
//! by session and resource, in a [`Secret`] whose `Debug` prints
//! `[redacted]` and which has no `Display` and no `Serialize`, so it cannot
//! reach a log line, an event, a response or the store by accident. Nothing
//! is persisted: after a restart a repository not yet cloned is cloned
//! without a token (public repositories still work) until the token is
//! rotated through the resource update call. The grep test in
//! `tests/tests/resources.rs` checks that the token appears nowhere in the
//! data directory, the server's output or the events.

use std::collections::HashMap;
use std::sync::Mutex;

use logbook_core::{SessionId, SessionResourceId};
use serde::{Deserialize, Deserializer};

/// Longest token accepted: GitHub tokens are under 300 characters; this
/// bounds what a client can make the server hold.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A secret string. `Debug` shows `[redacted]`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// What the vault knows of one repository resource.
#[derive(Debug, Clone, Default)]
struct Entry {
    token: Option<Secret>,
    /// A clone was attempted with the current token (a failed one is tried
    /// again only after a rotation).
    attempted: bool,
}

/// The tokens of every repository resource this process knows.
#[derive(Debug, Default)]
pub struct Vault {
    entries: Mutex<HashMap<(SessionId, SessionResourceId), Entry>>,
}

impl Vault {
    /// Records the token of a newly attached or rotated resource; the next
    /// turn tries to clone again.
    pub fn set(&self, session: SessionId, resource: SessionResourceId, token: Option<Secret>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert((session, resource), Entry { token, attempted: false });
        }
    }

    /// Takes the right to attempt a clone: `Some(token)` (the token may be
    /// absent) unless a clone was already attempted with the current token.
    pub fn begin_attempt(&self, session: SessionId, resource: SessionResourceId) -> Option<Option<Secret>> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.entry((session, resource)).or_default();
        if entry.attempted {
            return None;
        }
        entry.attempted = true;
        Some(entry.token.clone())
    }

    /// Whether a clone is still to be attempted with the resource's current
    /// token (what [`Vault::begin_attempt`] would grant), without taking it.
    pub fn awaits_attempt(&self, session: SessionId, resource: SessionResourceId) -> bool {
        let Ok(entries) = self.entries.lock() else { return false };
        entries.get(&(session, resource)).is_none_or(|entry| !entry.attempted)
    }

    /// Forgets a session's tokens (the session was deleted).
    pub fn forget_session(&self, session: SessionId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|(s, _), _| *s != session);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("ghp_canary".to_owned());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        let vault = Vault::default();
        vault.set(SessionId::from_parts(1, 1), SessionResourceId::from_parts(1, 2), Some(secret));
        assert!(!format!("{vault:?}").contains("canary"));
    }

    #[test]
    fn one_attempt_per_token() {
        let vault = Vault::default();
        let (s, r) = (SessionId::from_parts(1, 1), SessionResourceId::from_parts(1, 2));
        // Unknown to this process (a restart): one attempt without a token.
        assert!(vault.awaits_attempt(s, r));
        assert_eq!(vault.begin_attempt(s, r), Some(None));
        assert!(!vault.awaits_attempt(s, r));
        assert_eq!(vault.begin_attempt(s, r), None);
        vault.set(s, r, Some(Secret::new("t1".to_owned())));
        assert!(vault.awaits_attempt(s, r));
        assert_eq!(vault.begin_attempt(s, r).unwrap().unwrap().expose(), "t1");
        assert_eq!(vault.begin_attempt(s, r), None);
        vault.forget_session(s);
        assert_eq!(vault.begin_attempt(s, r), Some(None));
    }
}
