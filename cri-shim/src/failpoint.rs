//! Crash points for the reliability tests: `SKIFF_CRASH_AT=<name>` makes skiffd kill itself
//! with SIGKILL when it reaches the point of that name, exactly as if it had been `kill -9`ed
//! there. Unset (always, outside those tests) it costs one cached lookup.

use std::sync::OnceLock;

/// The crash point named in the environment, read once.
fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var("SKIFF_CRASH_AT").ok())
        .as_deref()
}

/// Dies here by SIGKILL if `name` is the armed crash point.
pub fn crash_point(name: &str) {
    if armed() == Some(name) {
        tracing::warn!(point = name, "SKIFF_CRASH_AT: killing skiffd here");
        // SAFETY: raising a signal on ourselves; SIGKILL cannot be caught, nothing unwinds.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
