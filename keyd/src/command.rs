//! Commands keyd runs for the user (reload and rekey hooks): bounded by a timeout, in a process
//! group of their own, values passed only through the environment.

use crate::secret::SecretString;

/// Runs `program args…` with `env` added to keyd's environment (values never in argv), for at
/// most `timeout`; `None` when it was killed at the timeout.
/// The command runs in a process group of its own, and the whole group is killed, so a
/// script's children do not outlive it.
pub(crate) fn run_with_timeout(
    program: &str,
    args: &[String],
    env: &[(String, SecretString)],
    timeout: std::time::Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::CommandExt as _;
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v.expose_secret())))
        .stdin(std::process::Stdio::null())
        // Its output joins keyd's log (stderr): stdout may carry keyctl's --json answer.
        .stdout(std::process::Stdio::from(
            std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned()?,
        ))
        .process_group(0)
        .spawn()?;
    let deadline = std::time::Instant::now() + timeout;
    // Polled: std has no wait with a deadline, and hooks are short-lived.
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
    if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.kill(); // in case the group kill was refused
    child.wait()?;
    Ok(None)
}
