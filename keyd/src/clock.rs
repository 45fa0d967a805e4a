//! Where time comes from: the system clock in production, a controlled one in tests. Everything
//! that depends on time (rotation schedules, grace periods, `publish_ahead`) takes a [`Clock`].

/// A source of Unix time.
pub trait Clock: Send + Sync {
    /// Unix seconds now.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        unix_now()
    }
}

/// Unix seconds now, from the system clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-22T03:59:00Z`).
pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Seconds to wait before retrying something that failed `attempts` times (a rotation step, a
/// hook): 30 s doubling, at most an hour.
pub fn backoff(attempts: u32) -> i64 {
    (30i64 << attempts.min(7).saturating_sub(1)).min(3600)
}
