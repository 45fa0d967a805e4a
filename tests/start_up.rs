//! keyd's start: what fails in the start-up delivery is logged and retried on schedule, and
//! keyd serves all the same; only a store that cannot be opened keeps it from starting.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use keyd_tests::{TempDir, keyctl, keyd, ok};

/// A reload hook that fails when keyd starts (the delivered file was removed, so the start-up
/// pass writes it and runs the hook) used to stop keyd with exit 1: as a container, it
/// restarted in a loop and never served. It must serve, and show the hook as owed.
#[test]
fn a_reload_hook_that_fails_at_start_up_is_owed_and_keyd_serves_instead_of_exiting() {
    let tmp = TempDir::new("startreload");
    std::fs::write(
        tmp.join("app.toml"),
        format!(
            "[stack]\nname = \"app\"\n\n[sinks.files]\ndir = \"{}\"\nreload = {{ command = [\"false\"] }}\n\n[secrets.TOKEN]\nkind = \"token\"\n",
            tmp.join("out").display()
        ),
    )
    .unwrap();
    let home = tmp.join("home");
    // The quickstart's own reload fails too: that is its report, not this test's subject.
    let _ = keyctl(&home)
        .args(["quickstart", "--policy"])
        .arg(tmp.join("app.toml"))
        .output()
        .unwrap();
    std::fs::remove_file(tmp.join("out/TOKEN")).unwrap();

    let socket = tmp.join("keyd.sock");
    let mut child = keyd(&home)
        .arg("--socket")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ready = line.starts_with("keyd: ready on");
                log.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let exited = child.try_wait().unwrap();
    let status =
        String::from_utf8(ok(keyctl(&home).arg("--socket").arg(&socket).arg("status"))).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        exited.is_none(),
        "keyd exited: {exited:?}\n{}",
        log.join("\n")
    );
    let log = log.join("\n");
    assert!(
        log.contains("keyd: start-up delivery failed: files reload false"),
        "{log}"
    );
    assert!(status.contains("reload hook owed"), "{status}");
    assert!(status.contains("(from keyd at"), "{status}");
    assert!(tmp.join("out/TOKEN").exists(), "the file was delivered");
}
