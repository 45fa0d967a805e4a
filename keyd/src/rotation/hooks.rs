//! The test-only points of the engine: where a process stops (`KEYD_PAUSE_AFTER`) or panics
//! (`KEYD_PANIC_IN`) on purpose. They exist only with the `test-hooks` feature (which the
//! workspace's test crate turns on); without it they are empty functions and a release build
//! ignores both variables.

/// Where a process stops on purpose (`KEYD_PAUSE_AFTER=create,set,…`): lets the crash tests
/// SIGKILL the process exactly at a step boundary, and the concurrency tests hold a rotation
/// while another process queues behind it. It announces the pause on stderr, then waits for a
/// line (or end of input) on stdin.
#[cfg(feature = "test-hooks")]
pub(super) fn pause_point(point: &str) {
    if let Ok(points) = std::env::var("KEYD_PAUSE_AFTER")
        && points.split(',').any(|p| p == point)
    {
        eprintln!("keyd: paused after {point}");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
}

#[cfg(not(feature = "test-hooks"))]
pub(super) fn pause_point(_point: &str) {}

/// Panics on purpose while delivering a step of the secret named by `KEYD_PANIC_IN`, after the
/// step was persisted: tests the containment of a panic in one secret's work.
#[cfg(feature = "test-hooks")]
pub(super) fn panic_point(name: &str) {
    if std::env::var("KEYD_PANIC_IN").is_ok_and(|n| n == name) {
        panic!("KEYD_PANIC_IN={name}: a panic on purpose while delivering");
    }
}

#[cfg(not(feature = "test-hooks"))]
pub(super) fn panic_point(_name: &str) {}
