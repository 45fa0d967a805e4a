//! The files sink's reload hook: a signal to the process a pid file names, or a command,
//! run after a delivery changed something.

use std::path::Path;

use crate::policy::{ReloadHook, Signal};
use crate::sinks::SinkError;

/// The process a reload hook's pid file names: a positive pid above 1 (never 0, -1 or a
/// negative number, which `kill(2)` reads as a process group or every process; never init) of
/// a process that exists now. Whoever can write the file picks the process signalled, so it
/// must be a regular file (no link followed) owned by keyd's uid or root.
fn read_pid_file(pid_file: &Path) -> std::io::Result<rustix::process::Pid> {
    use crate::regular_file::{Owner, open_regular, read_at_most};
    let (file, _) = open_regular(pid_file, Owner::KeydOrRoot)?;
    let bytes = read_at_most(file, 64)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let pid = text
        .parse::<u32>()
        .ok()
        .and_then(|n| i32::try_from(n).ok())
        .filter(|&n| n > 1)
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "holds {text:?}, not the process id of a running program (a number above 1)"
            ))
        })?;
    rustix::process::test_kill_process(pid).map_err(|e| {
        std::io::Error::other(format!(
            "names process {text}, which cannot be signalled ({}): is the pid file stale?",
            std::io::Error::from(e)
        ))
    })?;
    Ok(pid)
}

/// Runs a files sink's reload hook after a delivery changed something. The command gets no
/// secret: not in argv, not in its environment (keyd's own environment holds none).
pub fn run_reload_hook(hook: &ReloadHook) -> Result<(), SinkError> {
    let fail = |path: &Path, source: std::io::Error| SinkError::Io {
        sink: "files reload",
        path: path.to_owned(),
        source,
    };
    match hook {
        ReloadHook::Signal { signal, pid_file } => {
            let pid = read_pid_file(pid_file).map_err(|e| fail(pid_file, e))?;
            let sig = match signal {
                Signal::Hup => rustix::process::Signal::HUP,
                Signal::Usr1 => rustix::process::Signal::USR1,
                Signal::Usr2 => rustix::process::Signal::USR2,
                Signal::Int => rustix::process::Signal::INT,
                Signal::Term => rustix::process::Signal::TERM,
            };
            rustix::process::kill_process(pid, sig).map_err(|e| fail(pid_file, e.into()))
        }
        ReloadHook::Command { argv, timeout } => {
            let program = Path::new(&argv[0]);
            let status = crate::command::run_with_timeout(&argv[0], &argv[1..], &[], *timeout)
                .map_err(|e| fail(program, e))?;
            match status {
                Some(status) if status.success() => Ok(()),
                Some(status) => Err(fail(
                    program,
                    std::io::Error::other(format!("reload command exited with {status}")),
                )),
                None => Err(fail(
                    program,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "reload command timed out after {} and was killed",
                            crate::policy::duration::format(*timeout)
                        ),
                    ),
                )),
            }
        }
    }
}
