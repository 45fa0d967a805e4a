//! A real RabbitMQ node for tests: Debian's `rabbitmq-server` started from
//! `/usr/lib/rabbitmq/bin` (Debian's `rabbitmqctl` wrapper would force `HOME=/var/lib/rabbitmq`)
//! with everything in its own temporary directory: its HOME and Erlang cookie, data and logs,
//! a config with the AMQP listener and the management API (and, asked, AMQPS and HTTPS) on
//! free loopback ports, and a private epmd the test starts itself on a loopback port of its own
//! (so it owns the process and can stop it). Run as root (CI), the node runs as Debian's
//! `rabbitmq` user. Stopped, with its epmd, when dropped. Logins are checked with `rabbitmqctl
//! authenticate_user` against the node, independent of keyd's AMQP client.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;
use crate::servers::{ServerCert, free_port};

/// A RabbitMQ node with the management plugin and an administrator `admin`.
pub struct Rabbitmq {
    /// Its directory (HOME, config, data, logs).
    pub dir: TempDir,
    /// The AMQP port on 127.0.0.1.
    pub amqp_port: u16,
    /// The management API's port on 127.0.0.1.
    pub http_port: u16,
    /// With TLS: the AMQPS port and the management API's HTTPS port on 127.0.0.1.
    pub tls_ports: Option<(u16, u16)>,
    /// The admin's password.
    pub admin_password: String,
    env: Vec<(String, String)>,
    child: Child,
    epmd: Child,
}

/// `program` run as the `rabbitmq` user when the test runs as root.
fn as_rabbitmq(program: &str) -> Command {
    if rustix::process::getuid().is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=rabbitmq", "--regid=rabbitmq", "--init-groups"])
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Rabbitmq {
    /// Starts a node, waits for its management API and creates the admin.
    pub fn start(tag: &str) -> Rabbitmq {
        Rabbitmq::start_with(tag, None)
    }

    /// Like [`Rabbitmq::start`]; with `tls`, the node also listens for AMQPS and HTTPS with
    /// that certificate.
    pub fn start_with(tag: &str, tls: Option<ServerCert<'_>>) -> Rabbitmq {
        let dir = TempDir::new(&format!("rabbitmq-{tag}"));
        let (amqp_port, http_port, dist_port, epmd_port) =
            (free_port(), free_port(), free_port(), free_port());
        let mut config = format!(
            "listeners.tcp.default = 127.0.0.1:{amqp_port}\nmanagement.tcp.port = {http_port}\nmanagement.tcp.ip = 127.0.0.1\nloopback_users = none\n"
        );
        let tls_ports = tls.map(|tls| {
            std::fs::write(dir.join("server.crt"), tls.cert_pem).unwrap();
            std::fs::write(dir.join("server.key"), tls.key_pem).unwrap();
            let (amqps, https) = (free_port(), free_port());
            let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
            let files = |prefix: &str| {
                format!(
                    "{prefix}.cacertfile = {crt}\n{prefix}.certfile = {crt}\n{prefix}.keyfile = {key}\n",
                    crt = crt.display(),
                    key = key.display()
                )
            };
            config.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{amqps}\n{}ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\nmanagement.ssl.port = {https}\nmanagement.ssl.ip = 127.0.0.1\n{}",
                files("ssl_options"),
                files("management.ssl")
            ));
            (amqps, https)
        });
        std::fs::write(dir.join("rabbitmq.conf"), config).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n").unwrap();
        let cookie = dir.join(".erlang.cookie");
        std::fs::write(&cookie, format!("KEYDTEST{}", std::process::id())).unwrap();
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
        for sub in ["mnesia", "log"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        if rustix::process::getuid().is_root() {
            let out = Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {out:?}");
        }
        let path = |p: &str| dir.join(p).display().to_string();
        let env: Vec<(String, String)> = [
            ("HOME", path("")),
            (
                "RABBITMQ_NODENAME",
                format!("keyd{}x{amqp_port}@localhost", std::process::id()),
            ),
            ("RABBITMQ_NODE_PORT", amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("ERL_EPMD_PORT", epmd_port.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut epmd = Command::new("epmd")
            .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("epmd (Debian's erlang-base, a dependency of rabbitmq-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", epmd_port)).is_err() {
            assert!(Instant::now() < deadline, "epmd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let child = match as_rabbitmq("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                let _ = epmd.kill();
                let _ = epmd.wait();
                panic!("rabbitmq-server (tests/run installs Debian's rabbitmq-server): {e}");
            }
        };
        let node = Rabbitmq {
            dir,
            amqp_port,
            http_port,
            tls_ports,
            admin_password: format!("radmin{}", std::process::id()),
            env,
            child,
            epmd,
        };
        node.wait_until_ready();
        let admin = serde_json::json!({ "password": node.admin_password, "tags": "administrator" });
        node.api("PUT", "/api/users/admin", Some(&admin.to_string()));
        node.api(
            "PUT",
            "/api/permissions/%2F/admin",
            Some(r#"{"configure":".*","write":".*","read":".*"}"#),
        );
        node
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if http(self.http_port, "GET", "/api/overview", None).is_some_and(|(s, _)| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("RabbitMQ did not start:\n{}", self.log());
    }

    /// A management API call as `guest` (allowed from loopback: `loopback_users = none` lets
    /// it in on 127.0.0.1 too); panics unless it answers 2xx. Returns the body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let (status, body_out) = http(self.http_port, method, path, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status} {body_out}"
        );
        body_out
    }

    /// `rabbitmqctl ARGS` against this node; stdout, or `None` when it failed.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        let out = as_rabbitmq("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether `user` authenticates with `password` (`rabbitmqctl authenticate_user`).
    pub fn can_login(&self, user: &str, password: &str) -> bool {
        self.ctl(&["authenticate_user", user, password]).is_some()
    }

    /// Everything the node logged.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.join("log"))
            .into_iter()
            .flatten()
        {
            let entry: PathBuf = entry.unwrap().path();
            text.push_str(&std::fs::read_to_string(entry).unwrap_or_default());
        }
        text
    }
}

/// One HTTP/1.0 request to the management API on 127.0.0.1:`port` as `guest`; the status and
/// body, or `None` when nothing answered.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

impl Drop for Rabbitmq {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
    }
}
