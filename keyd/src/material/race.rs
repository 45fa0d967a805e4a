//! Slow generations (RSA prime search) raced on every core: each job runs on a thread of its
//! own, and a core with nothing new to start runs a second attempt at the job it has waited on
//! longest; the first attempt to finish gives that job's result. An RSA key's generation time
//! varies by a factor of ten from one attempt to the next, so two attempts at one key finish,
//! on average, well before one does. A losing attempt is left to finish on its own (its thread
//! is detached) and its result is dropped, zeroized like any other.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;

/// At most this many attempts run at one job.
const ATTEMPTS_PER_JOB: usize = 2;

/// `run(job)` for each of `jobs`, in order, on up to `cores` threads at once (at least one),
/// with second attempts as described in the module comment. A panic of the attempt that
/// finished first is resumed here.
pub fn race<J, T>(jobs: &[J], cores: usize, run: fn(J) -> T) -> Vec<T>
where
    J: Clone + Send + 'static,
    T: Send + 'static,
{
    let cores = cores.max(1);
    let (tx, rx) = mpsc::channel();
    let mut attempts = vec![0usize; jobs.len()];
    let mut results: Vec<Option<std::thread::Result<T>>> = jobs.iter().map(|_| None).collect();
    let (mut running, mut done) = (0, 0);
    let start = |i: usize, attempts: &mut [usize]| {
        attempts[i] += 1;
        let (job, tx) = (jobs[i].clone(), tx.clone());
        std::thread::spawn(move || {
            // Sent whatever happens, so the wait below always ends.
            let _ = tx.send((i, catch_unwind(AssertUnwindSafe(|| run(job)))));
        });
    };
    while done < jobs.len() {
        // Free cores: the next job not started, else a second attempt at the oldest job left.
        while running < cores {
            let next = (0..jobs.len()).find(|&i| attempts[i] == 0).or_else(|| {
                (0..jobs.len()).find(|&i| results[i].is_none() && attempts[i] < ATTEMPTS_PER_JOB)
            });
            let Some(i) = next else { break };
            start(i, &mut attempts);
            running += 1;
        }
        let (i, result) = rx.recv().expect("this function holds a sender");
        running -= 1;
        if results[i].is_none() {
            results[i] = Some(result);
            done += 1;
        }
    }
    results
        .into_iter()
        .map(|r| match r.expect("every job has a result") {
            Ok(value) => value,
            Err(panic) => resume_unwind(panic),
        })
        .collect()
}

/// The cores this process may use (1 when that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_gets_the_result_of_its_first_finished_attempt_in_order() {
        // Attempts take their job's time; a job's second attempt gives the same answer.
        let jobs: Vec<u64> = vec![30, 5, 20, 1];
        let out = race(&jobs, 2, |ms| {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            ms * 10
        });
        assert_eq!(out, vec![300, 50, 200, 10]);
    }

    #[test]
    fn one_job_on_two_cores_runs_two_attempts_and_takes_the_first() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let out = race(&[()], 2, |()| {
            // The first attempt to start is slow; the second is fast and wins.
            if STARTED.fetch_add(1, Ordering::SeqCst) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(500));
                "slow"
            } else {
                "fast"
            }
        });
        assert_eq!(out, vec!["fast"]);
        assert_eq!(STARTED.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_panic_of_the_winning_attempt_is_resumed() {
        let caught = catch_unwind(|| race(&[1u8], 1, |_| -> u8 { panic!("keygen broke") }));
        let panic = caught.expect_err("the panic comes through");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"keygen broke"));
    }
}
