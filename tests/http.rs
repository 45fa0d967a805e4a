//! keyd's HTTP server under hostile or careless clients, over the real socket of a real keyd:
//! a header line that never ends, a client that sends one byte a second, a kept-alive
//! connection left idle, hundreds of idle connections (on the API socket and on the Docker
//! plugin socket), and an answer long enough to be sent chunked (read by keyctl). In each case
//! health checks go on being answered and SIGTERM stops keyd promptly.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyd_tests::{TempDir, keyctl, keyd, ok};

struct Daemon {
    child: Child,
    socket: PathBuf,
    plugin: PathBuf,
    _tmp: TempDir,
    home: PathBuf,
}

impl Daemon {
    /// A keyd over a stack of `secrets` tokens.
    fn start(tag: &str, secrets: usize) -> Daemon {
        let tmp = TempDir::new(tag);
        let mut policy = String::from("[stack]\nname = \"app\"\n");
        for i in 0..secrets {
            policy.push_str(&format!("\n[secrets.TOKEN_{i}]\nkind = \"token\"\n"));
        }
        std::fs::write(tmp.join("app.toml"), policy).unwrap();
        let home = tmp.join("home");
        ok(keyctl(&home)
            .arg("quickstart")
            .arg("--policy")
            .arg(tmp.join("app.toml"))
            .arg("--out")
            .arg(tmp.join("out")));
        let socket = home.join("keyd.sock");
        let plugin = tmp.join("plugin.sock");
        let mut child = keyd(&home)
            .arg("--socket")
            .arg(&socket)
            .arg("--docker-plugin")
            .arg(&plugin)
            .args(["--plugin-stack", "app"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut ready = String::new();
        stderr.read_line(&mut ready).unwrap();
        assert!(ready.starts_with("keyd: ready on"), "{ready}");
        // Drained so the daemon never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Daemon {
            child,
            socket,
            plugin,
            _tmp: tmp,
            home,
        }
    }

    /// Whether `GET /v1/health` is answered within `limit` (asked on a thread, so a daemon
    /// that never answers fails the test instead of hanging it).
    fn healthy_within(&self, limit: Duration) -> bool {
        let socket = self.socket.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let answer = keyd::daemon::client::connect(&socket).and_then(|mut c| {
                keyd::daemon::client::call(&mut c, &socket, "GET", "/v1/health", None).ok()
            });
            let _ = tx.send(answer.is_some_and(|(status, _)| status == 200));
        });
        rx.recv_timeout(limit).unwrap_or(false)
    }

    /// Whether the plugin socket answers `POST /Plugin.Activate` within `limit`.
    fn plugin_answers_within(&self, limit: Duration) -> bool {
        let socket = self.plugin.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let answer = (|| {
                let mut s = UnixStream::connect(&socket).ok()?;
                s.write_all(b"POST /Plugin.Activate HTTP/1.1\r\nConnection: close\r\n\r\n")
                    .ok()?;
                let mut raw = String::new();
                s.read_to_string(&mut raw).ok()?;
                Some(raw.starts_with("HTTP/1.1 200") && raw.contains("secretprovider"))
            })();
            let _ = tx.send(answer == Some(true));
        });
        rx.recv_timeout(limit).unwrap_or(false)
    }

    /// Sends SIGTERM; returns how long keyd took to exit, or None if it had not within `limit`.
    fn terminate_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server has closed `stream` (EOF, a reset, or a final error answer then EOF),
/// waiting at most `limit`.
fn closed_within(stream: &mut UnixStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An error answer (431) before the close: read on to the end.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn an_endless_header_line_is_cut_off_and_health_still_answers() {
    let mut daemon = Daemon::start("endless-header", 1);
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nX-Endless: ")
        .unwrap();
    // At most 4 MiB, never a newline: the server must give up long before.
    let chunk = [b'a'; 4096];
    let mut sent = 0usize;
    let mut refused = false;
    while sent < 4 * 1024 * 1024 {
        if stream.write_all(&chunk).is_err() {
            refused = true;
            break;
        }
        sent += chunk.len();
    }
    assert!(
        refused || closed_within(&mut stream, Duration::from_secs(2)),
        "keyd kept reading a {sent}-byte header line"
    );
    assert!(sent <= 1024 * 1024, "keyd read {sent} bytes of one header");
    assert!(daemon.healthy_within(Duration::from_secs(5)));
    assert!(daemon.terminate_within(Duration::from_secs(2)).is_some());
}

#[test]
fn a_client_sending_one_byte_a_second_is_cut_by_the_header_timeout() {
    let mut daemon = Daemon::start("slow-client", 1);
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    let started = Instant::now();
    let head = b"GET /v1/health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = None;
    for byte in head.iter().take(15) {
        if stream.write_all(&[*byte]).is_err() || closed_within(&mut stream, Duration::from_secs(1))
        {
            cut = Some(started.elapsed());
            break;
        }
        // Health is answered meanwhile.
        assert!(
            daemon.healthy_within(Duration::from_secs(2)),
            "health after {:?}",
            started.elapsed()
        );
    }
    let cut = cut.expect("keyd was still reading the slow head after 15 s");
    assert!(
        cut >= keyd_header_timeout() - Duration::from_millis(500)
            && cut <= keyd_header_timeout() + Duration::from_secs(3),
        "cut after {cut:?}"
    );
    assert!(daemon.terminate_within(Duration::from_secs(2)).is_some());
}

/// keyd's header timeout, as documented in daemon/http.rs.
fn keyd_header_timeout() -> Duration {
    Duration::from_secs(5)
}

#[test]
fn two_hundred_idle_connections_per_socket_neither_starve_health_nor_delay_sigterm() {
    let mut daemon = Daemon::start("idle-connections", 1);
    let mut idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&daemon.socket).unwrap())
        .collect();
    // Half of them begin a request and stop: idle, but not silent. keyd may have closed some
    // already (it keeps 64 per socket and closes the oldest idle one for a newcomer), so a
    // write can fail with a broken pipe: that is keyd working, not a failure.
    for stream in idle.iter_mut().step_by(2) {
        let _ = stream.write_all(b"GET /v1/health HTTP/1.1\r\n");
    }
    for _ in 0..3 {
        assert!(
            daemon.healthy_within(Duration::from_secs(3)),
            "no health answer with 200 idle connections open"
        );
    }
    // The plugin socket has a table of its own: 200 idle there too, and the engine still
    // gets its answer.
    let idle_on_plugin: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&daemon.plugin).unwrap())
        .collect();
    assert!(
        daemon.plugin_answers_within(Duration::from_secs(3)),
        "no plugin answer with 200 idle connections open"
    );
    assert!(daemon.healthy_within(Duration::from_secs(3)));
    let took = daemon.terminate_within(Duration::from_secs(2));
    assert!(
        took.is_some(),
        "keyd still running 2 s after SIGTERM with 400 idle connections"
    );
    drop(idle_on_plugin);
    assert!(!daemon.socket.exists());
    drop(idle);
}

#[test]
fn keyctl_reads_a_long_status_that_keyd_sends_chunked() {
    let daemon = Daemon::start("chunked", 300);
    // The answer is long enough to go out chunked, as the Engine's and Go servers' do.
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: keyd\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // keyctl reads it (through the daemon: with its socket given, it does not fall back).
    let printed = ok(keyctl(&daemon.home)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["status", "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&printed).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 300);
    // And the library client, as keyctl uses it, reads the same answer whole.
    let mut c = keyd::daemon::client::connect(&daemon.socket).unwrap();
    let (code, body) =
        keyd::daemon::client::call(&mut c, &daemon.socket, "GET", "/v1/status", None).unwrap();
    assert_eq!(code, 200);
    assert!(body.len() > 16 * 1024, "{} bytes", body.len());
    let _: serde_json::Value = serde_json::from_slice(&body).unwrap();
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let daemon = Daemon::start("idle-timeout", 1);
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: keyd\r\n\r\n")
        .unwrap();
    // The answer (Content-Length), then nothing more from either side.
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (line, _body) = keyd_tests::read_response(&mut reader);
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let idle_since = Instant::now();
    assert!(
        closed_within(&mut stream, keyd_header_timeout() + Duration::from_secs(3)),
        "an idle connection was still open after {:?}",
        idle_since.elapsed()
    );
    assert!(idle_since.elapsed() >= keyd_header_timeout() - Duration::from_millis(500));
}

#[test]
fn request_heads_whose_bodies_never_come_do_not_hold_the_connection_slots() {
    let daemon = Daemon::start("bodiless", 1);
    // As many as keyd keeps, and as many again as it serves beyond that: each announces a body
    // and never sends it.
    let mut stalled: Vec<UnixStream> = (0..64 + 16)
        .map(|i| {
            let mut s = UnixStream::connect(&daemon.socket).unwrap();
            let line = if i < 64 {
                "POST /v1/rotate"
            } else {
                "GET /v1/health"
            };
            s.write_all(
                format!("{line} HTTP/1.1\r\nHost: keyd\r\nContent-Length: 100\r\n\r\n").as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    // Every head read by keyd before anyone else asks.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.healthy_within(Duration::from_secs(3)),
        "no health answer with 80 bodies outstanding"
    );
    let status = keyd_tests::run_within(
        keyctl(&daemon.home)
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("status"),
        Duration::from_secs(20),
    );
    assert!(
        status.status.success(),
        "keyctl status failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let health = keyd_tests::run_within(
        keyd(&daemon.home)
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("--health"),
        Duration::from_secs(20),
    );
    assert!(health.status.success(), "keyd --health failed");
    // A body that never comes is waited for no longer than a head: the newest (never evicted)
    // is answered and closed.
    let newest = stalled.last_mut().unwrap();
    let waiting_since = Instant::now();
    assert!(
        closed_within(newest, keyd_header_timeout() + Duration::from_secs(3)),
        "a connection waiting for its body was still open after {:?}",
        waiting_since.elapsed()
    );
}
