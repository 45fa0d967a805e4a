//! Webhooks: a receiver on loopback (a plain `TcpListener` here) gets one signed JSON event for
//! a rotation, a retire and a failed rotation, with the signature checked by Python's `hmac`,
//! never a value in a body; events for a receiver that is down stay in the outbox across a
//! restart of keyd and are delivered once it is up.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use keyd_tests::{TempDir, keyctl, keyd, ok, pipe};

const KEY: &str = "webhook-signing-key-for-tests";

/// One request the receiver got: its signature header and body.
struct Received {
    signature: String,
    body: Vec<u8>,
}

/// A receiver on `port` answering 200 to every request, handing each to the returned channel.
fn receiver(listener: TcpListener) -> Receiver<Received> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut signature) = (0usize, String::new());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if lower.starts_with("x-keyd-signature:") {
                    signature = line["x-keyd-signature:".len()..].trim().to_owned();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(Received { signature, body });
        }
    });
    rx
}

/// The signature Python's `hmac` computes for `body` under the key file's text.
fn python_signature(key_file: &Path, body: &[u8]) -> String {
    let script = "import hashlib, hmac, sys\n\
                  key = open(sys.argv[1], 'rb').read().rstrip(b'\\n')\n\
                  print('sha256=' + hmac.new(key, sys.stdin.buffer.read(), hashlib.sha256).hexdigest())";
    let out = pipe("python3", &["-c", script, key_file.to_str().unwrap()], body);
    String::from_utf8(out).unwrap().trim().to_owned()
}

struct Daemon {
    child: Child,
    log: Receiver<String>,
}

impl Daemon {
    fn start(home: &Path) -> Daemon {
        let mut child = keyd(home)
            .arg("--socket")
            .arg(home.join("keyd.sock"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let daemon = Daemon { child, log };
        let ready = daemon.wait_for("keyd: ready on");
        assert!(ready, "keyd did not start");
        daemon
    }

    fn wait_for(&self, text: &str) -> bool {
        self.line_with(text).is_some()
    }

    /// The first log line from now on holding `text` (within 30 s).
    fn line_with(&self, text: &str) -> Option<String> {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
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

/// A home with `policy` applied; the key file written beside it.
fn setup(tmp: &TempDir, policy: &str) -> std::path::PathBuf {
    std::fs::write(tmp.join("hook.key"), format!("{KEY}\n")).unwrap();
    std::fs::write(tmp.join("app.toml"), policy).unwrap();
    let home = tmp.join("home");
    ok(keyctl(&home)
        .args(["quickstart", "--policy"])
        .arg(tmp.join("app.toml"))
        .arg("--out")
        .arg(tmp.join("out")));
    home
}

fn event(rx: &Receiver<Received>, key_file: &Path) -> serde_json::Value {
    let got = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("an event within 30 s");
    assert_eq!(got.signature, python_signature(key_file, &got.body));
    assert!(got.signature.starts_with("sha256=") && got.signature.len() == 7 + 64);
    serde_json::from_slice(&got.body).unwrap()
}

/// No version's value of any secret appears in `text`.
fn no_values(home: &Path, text: &str) {
    let store = keyd::store::Home::new(home).peek().unwrap();
    for stack in store.stacks.values() {
        for record in stack.secrets.values() {
            for v in &record.versions {
                if let Some(value) =
                    keyd::store::SecretRecord::version_value(v, keyd::policy::Part::Main)
                {
                    assert!(!text.contains(value.expose()), "a value is in {text}");
                }
            }
        }
    }
}

#[test]
fn rotate_retire_and_a_failed_rotation_are_each_sent_signed_and_without_values() {
    let redis = keyd_tests::servers::Redis::start("notify", true);
    let tmp = TempDir::new("notify-events");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = receiver(listener);
    let admin = tmp.join("redis-admin");
    std::fs::write(&admin, &redis.admin_password).unwrap();
    let home = setup(
        &tmp,
        &format!(
            "[stack]\nname = \"app\"\n\n[notify]\nwebhook = \"http://127.0.0.1:{port}/hooks/keyd\"\nsecret_file = \"hook.key\"\n\n\
             [targets.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{rport}\"\nuser = \"default\"\npassword_file = \"{admin}\"\n\n\
             [secrets.HAND]\nkind = \"fernet\"\n\n\
             [secrets.CACHE_PASSWORD]\nkind = \"password\"\nrotate = \"4s\"\ntarget = {{ name = \"cache\", user = \"app\", acl = \"~app:* +@all\", mode = \"acl\" }}\n",
            rport = redis.port,
            admin = admin.display()
        ),
    );
    let key_file = tmp.join("hook.key");
    let daemon = Daemon::start(&home);
    // The target can no longer be reached: the scheduled rotation fails.
    std::fs::remove_file(&admin).unwrap();
    ok(keyctl(&home).args(["rotate", "HAND"]));
    ok(keyctl(&home).args(["retire", "HAND"]));

    let mut bodies = Vec::new();
    for _ in 0..3 {
        bodies.push(event(&rx, &key_file));
    }
    let find = |kind: &str| {
        bodies
            .iter()
            .find(|b| b["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {bodies:#?}"))
    };
    let rotated = find("rotated");
    assert_eq!(
        (rotated["stack"].as_str(), rotated["name"].as_str()),
        (Some("app"), Some("HAND"))
    );
    assert_eq!(rotated["version"], 2);
    assert_eq!(rotated["message"], "v1 -> v2");
    assert!(rotated["time"].as_str().unwrap().ends_with('Z'));
    let retired = find("retired");
    assert_eq!(retired["name"], "HAND");
    let failed = find("failed");
    assert_eq!(failed["name"], "CACHE_PASSWORD");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("password_file"),
        "{failed}"
    );
    let all = serde_json::to_string(&bodies).unwrap();
    no_values(&home, &all);
    assert!(daemon.wait_for("delivered to http://127.0.0.1:"));
    assert!(!all.contains(KEY));
}

#[test]
fn events_for_a_receiver_that_is_down_are_kept_across_a_restart_and_delivered_when_it_is_up() {
    let tmp = TempDir::new("notify-outbox");
    // A port nothing listens on yet.
    let port = keyd_tests::servers::free_port();
    let home = setup(
        &tmp,
        &format!(
            "[stack]\nname = \"app\"\n\n[notify]\nwebhook = \"http://127.0.0.1:{port}/h\"\nsecret_file = \"hook.key\"\nevents = [\"rotated\"]\n\n\
             [secrets.HAND]\nkind = \"token\"\n"
        ),
    );
    let daemon = Daemon::start(&home);
    ok(keyctl(&home).args(["rotate", "HAND"]));
    assert!(
        daemon.wait_for("not delivered (attempt 1)"),
        "the receiver is down"
    );
    drop(daemon);

    let outbox_path = home.join("notify-outbox.json");
    let meta = std::fs::metadata(&outbox_path).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let outbox = std::fs::read_to_string(&outbox_path).unwrap();
    assert!(outbox.contains("\"rotated\""), "{outbox}");
    no_values(&home, &outbox);
    assert!(!outbox.contains(KEY));

    let rx = receiver(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let daemon = Daemon::start(&home);
    let body = event(&rx, &tmp.join("hook.key"));
    assert_eq!(
        (body["event"].as_str(), body["version"].as_u64()),
        (Some("rotated"), Some(2))
    );
    assert!(daemon.wait_for("delivered to"));
    // Delivered: the outbox is empty now.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&outbox_path)
        .unwrap()
        .contains("rotated")
    {
        assert!(std::time::Instant::now() < end, "still in the outbox");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An https:// receiver whose certificate no system CA signed is refused: the event is not
/// sent to it and stays in the outbox.
#[test]
fn an_https_receiver_with_an_untrusted_certificate_gets_nothing() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = keyd_tests::servers::localhost_cert();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, got) = channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, client);
            let mut buf = [0; 1024];
            if let Ok(n) = tls.read(&mut buf) {
                let _ = tx.send(buf[..n].to_vec());
            }
        }
    });
    let tmp = TempDir::new("notify-tls");
    let home = setup(
        &tmp,
        &format!(
            "[stack]\nname = \"app\"\n\n[notify]\nwebhook = \"https://localhost:{port}/h\"\nsecret_file = \"hook.key\"\n\n\
             [secrets.HAND]\nkind = \"token\"\n"
        ),
    );
    let daemon = Daemon::start(&home);
    ok(keyctl(&home).args(["rotate", "HAND"]));
    let line = daemon.line_with("not delivered (attempt 1)").unwrap();
    assert!(line.contains("TLS: invalid peer certificate"), "{line}");
    assert!(!line.contains("/h"), "the URL's path is not logged: {line}");
    assert!(
        got.try_iter().all(|b| b.is_empty()),
        "the receiver read a request"
    );
    let outbox = std::fs::read_to_string(home.join("notify-outbox.json")).unwrap();
    assert!(outbox.contains("\"rotated\""), "kept: {outbox}");
}

/// A certificate within the 14 days the alert rule and `keyctl check` warn in, whose renewal
/// is not due yet, is announced as `expiring` once, with its version, and a restart does not
/// announce a certificate that is not near its end.
#[test]
fn a_certificate_near_its_end_is_announced_once_as_expiring_and_one_far_from_it_is_not() {
    let tmp = TempDir::new("notify-expiring");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = receiver(listener);
    let home = setup(
        &tmp,
        &format!(
            "[stack]\nname = \"app\"\n\n[notify]\nwebhook = \"http://127.0.0.1:{port}/hooks/keyd\"\nsecret_file = \"hook.key\"\nevents = [\"expiring\"]\n\n\
             [secrets.NEAR]\nkind = \"tls\"\nkey = \"NEAR_KEY\"\ncn = \"near.example\"\ndays = 10\nrenew_before = \"1d\"\n\n\
             [secrets.FAR]\nkind = \"tls\"\nkey = \"FAR_KEY\"\ncn = \"far.example\"\ndays = 30\n",
        ),
    );
    let key_file = tmp.join("hook.key");
    let daemon = Daemon::start(&home);
    let expiring = event(&rx, &key_file);
    assert_eq!(expiring["event"], "expiring");
    assert_eq!(
        (expiring["stack"].as_str(), expiring["name"].as_str()),
        (Some("app"), Some("NEAR"))
    );
    assert_eq!(expiring["version"], 1);
    assert!(
        expiring["message"]
            .as_str()
            .unwrap()
            .starts_with("its certificate expires in 10 days"),
        "{expiring}"
    );
    // Neither FAR nor a second NEAR event: a rotation's pass and the scheduler's see the same.
    ok(keyctl(&home).args(["rotate", "FAR"]));
    assert!(
        rx.recv_timeout(Duration::from_secs(3)).is_err(),
        "one expiring event only"
    );
    drop(daemon);
}
