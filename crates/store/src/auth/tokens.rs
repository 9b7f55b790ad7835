//! etcd's simple tokens (`--auth-token simple`, `auth/simple_token.go`).
//!
//! A token is `<16 random letters>.<raft index>`: the member receiving `Authenticate` draws
//! the letters, the Raft entry that carries them gives the index, and every member, when it
//! applies that entry, records the token. A member that gets a token it has not applied yet
//! waits for that index first (the index in the token is what makes that possible), so a
//! token issued by one member works on every other. Tokens live only in memory, as in etcd:
//! after a restart clients authenticate again (etcdctl does so on "invalid auth token").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

/// etcd's default `--auth-token-ttl`: a token unused for this long is forgotten; every use
/// extends it.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

pub struct Tokens {
    map: Mutex<HashMap<String, (String, Instant)>>,
    /// `--auth-token-ttl`, in milliseconds.
    ttl_ms: AtomicU64,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens { map: Mutex::default(), ttl_ms: AtomicU64::new(TOKEN_TTL.as_millis() as u64) }
    }
}

/// The random part of a new token (etcd's `GenTokenPrefix`: 16 letters).
pub fn gen_prefix() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    (0..16).map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char).collect()
}

/// The Raft index a token was issued at, if it is well formed (etcd's `isValidSimpleToken`).
pub fn token_index(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.is_empty() {
        return None;
    }
    index.parse().ok()
}

impl Tokens {
    /// Sets `--auth-token-ttl` (member-local, as in etcd).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(ttl.as_millis() as u64, Ordering::Relaxed);
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    /// Records a token for `user` (applied from the Authenticate entry).
    pub fn assign(&self, token: String, user: &str) {
        let mut map = self.map.lock().expect("tokens lock");
        let now = Instant::now();
        // Forget expired tokens here, so the map stays bounded without a timer task.
        map.retain(|_, (_, deadline)| *deadline > now);
        map.insert(token, (user.to_string(), now + self.ttl()));
    }

    /// The user of a live token, extending its lifetime (etcd's `resetSimpleToken`).
    pub fn user_of(&self, token: &str) -> Option<String> {
        let mut map = self.map.lock().expect("tokens lock");
        let now = Instant::now();
        let entry = map.get_mut(token)?;
        if entry.1 <= now {
            map.remove(token);
            return None;
        }
        entry.1 = now + self.ttl();
        Some(entry.0.clone())
    }

    /// Drops the tokens of a deleted user or one whose password changed (etcd's `invalidateUser`).
    pub fn invalidate_user(&self, user: &str) {
        self.map.lock().expect("tokens lock").retain(|_, (u, _)| u != user);
    }

    /// Drops every token (auth disabled).
    pub fn clear(&self) {
        self.map.lock().expect("tokens lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_assigned_looked_up_and_invalidated() {
        let t = Tokens::default();
        let prefix = gen_prefix();
        assert_eq!(prefix.len(), 16);
        assert!(prefix.chars().all(|c| c.is_ascii_alphabetic()));
        let token = format!("{prefix}.42");
        assert_eq!(token_index(&token), Some(42));
        assert_eq!(token_index("garbage"), None);
        t.assign(token.clone(), "alice");
        assert_eq!(t.user_of(&token).as_deref(), Some("alice"));
        t.invalidate_user("bob");
        assert!(t.user_of(&token).is_some());
        t.invalidate_user("alice");
        assert!(t.user_of(&token).is_none());
        t.set_ttl(Duration::ZERO);
        t.assign(token.clone(), "alice");
        assert!(t.user_of(&token).is_none(), "an expired token is forgotten");
    }
}
