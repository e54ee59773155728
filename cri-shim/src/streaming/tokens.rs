//! Single-use tokens naming a pending streaming request: Exec, Attach and PortForward store
//! their request under a fresh random token; the streaming server takes it out exactly once,
//! and only before it expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pending requests at most; when full, the oldest is dropped (a client that asks for URLs
/// and never connects cannot grow memory without bound).
const MAX_PENDING: usize = 4096;

/// Requests waiting for their client, by token.
#[derive(Debug)]
pub struct TokenCache<T> {
    ttl: Duration,
    pending: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> TokenCache<T> {
    /// A cache whose tokens expire `ttl` after they are issued.
    pub fn new(ttl: Duration) -> Self {
        TokenCache {
            ttl,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `request` and returns its token (URL-safe, 128 random bits).
    pub fn insert(&self, request: T) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, (issued, _)| now.duration_since(*issued) < self.ttl);
        if pending.len() >= MAX_PENDING {
            if let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, (issued, _))| *issued)
                .map(|(t, _)| t.clone())
            {
                pending.remove(&oldest);
            }
        }
        pending.insert(token.clone(), (now, request));
        token
    }

    /// Takes the request stored under `token`: `None` if unknown, already used or expired.
    pub fn take(&self, token: &str) -> Option<T> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (issued, request) = pending.remove(token)?;
        (issued.elapsed() < self.ttl).then_some(request)
    }
}

/// 16 bytes from the kernel's CSPRNG, hex-encoded.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most bytes.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Never expected after boot; a token must still be unguessable, so use a fresh
        // sandbox-style ID (which has its own fallback) rather than something predictable.
        return crate::sandbox::new_id()[..32].to_string();
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_good_for_one_use() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let a = cache.insert("exec a");
        let b = cache.insert("exec b");
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(cache.take(&b), Some("exec b"));
        assert_eq!(cache.take(&b), None);
        assert_eq!(cache.take("nope"), None);
        assert_eq!(cache.take(&a), Some("exec a"));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let cache = TokenCache::new(Duration::from_millis(20));
        let token = cache.insert(1);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.take(&token), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let first = cache.insert(0);
        for i in 1..=MAX_PENDING {
            cache.insert(i);
        }
        assert_eq!(cache.pending.lock().unwrap().len(), MAX_PENDING);
        assert_eq!(cache.take(&first), None, "the oldest was dropped");
    }
}
