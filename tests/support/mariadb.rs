//! A real MariaDB server for tests: `mariadb-install-db` in its own temporary directory, then
//! `mariadbd` on a free loopback port with its general log on (every statement it receives),
//! stopped when dropped. Run as root (CI), the server drops to Debian's `mysql` user; run as
//! anyone else, it runs as that user. Logins are checked with the real `mariadb` client.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;
use crate::servers::{ServerCert, free_port};

/// A MariaDB server with an admin account `admin`@`127.0.0.1` (all privileges, with grant
/// option), reached over TCP, and `root`@`localhost` without a password on its Unix socket.
pub struct Mariadb {
    /// Its directory (data, socket, logs).
    pub dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The admin's password.
    pub admin_password: String,
    child: Child,
}

/// The server's options, for `mariadb-install-db` and `mariadbd` alike: a temporary directory
/// of its own (a starting server deletes the `#sql…` files it finds in its tmpdir, which in a
/// shared /tmp are those of servers installing beside it), small buffers, no binary log, no
/// name lookups (an account's host is matched by address: `127.0.0.1` and `%` over TCP,
/// `localhost` on the socket).
fn server_options(dir: &Path) -> Vec<String> {
    let mut options = vec![
        "--no-defaults".to_owned(),
        format!("--datadir={}", dir.join("data").display()),
        format!("--tmpdir={}", dir.join("tmp").display()),
        "--innodb-buffer-pool-size=16M".to_owned(),
        "--innodb-log-file-size=8M".to_owned(),
        "--skip-log-bin".to_owned(),
        "--skip-name-resolve".to_owned(),
    ];
    if rustix::process::getuid().is_root() {
        options.push("--user=mysql".to_owned());
    }
    options
}

impl Mariadb {
    /// Installs and starts a server without TLS.
    pub fn start(tag: &str) -> Mariadb {
        Mariadb::start_with(tag, None)
    }

    /// Like [`Mariadb::start`]; with `tls`, the server presents that certificate and accepts
    /// TLS (clients choose it).
    pub fn start_with(tag: &str, tls: Option<ServerCert<'_>>) -> Mariadb {
        let dir = TempDir::new(&format!("mariadb-{tag}"));
        std::fs::create_dir(dir.join("tmp")).unwrap();
        for path in [dir.path().to_path_buf(), dir.join("tmp")] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let out = Command::new("mariadb-install-db")
            .args(server_options(dir.path()))
            .args(["--skip-test-db", "--auth-root-authentication-method=normal"])
            .output()
            .expect("mariadb-install-db (tests/run installs Debian's mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut cmd = Command::new("/usr/sbin/mariadbd");
        cmd.args(server_options(dir.path()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg("--general-log=1")
            .arg(format!(
                "--general-log-file={}",
                dir.join("general.log").display()
            ));
        if let Some(tls) = tls {
            for (name, pem) in [("server.crt", tls.cert_pem), ("server.key", tls.key_pem)] {
                std::fs::write(dir.join(name), pem).unwrap();
                // Readable by the server's user; the directory holds nothing else secret.
                std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))
                    .unwrap();
            }
            cmd.arg(format!("--ssl-cert={}", dir.join("server.crt").display()))
                .arg(format!("--ssl-key={}", dir.join("server.key").display()));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (tests/run installs Debian's mariadb-server)");
        let admin_password = format!("madmin{}", std::process::id());
        let server = Mariadb {
            dir,
            port,
            admin_password,
            child,
        };
        server.wait_until_ready();
        // Kept out of the general log, which then shows only what others sent with it.
        server.root_sql(&format!(
            "SET SESSION sql_log_off = 1; CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY '{}'; GRANT ALL PRIVILEGES ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION",
            server.admin_password
        ));
        server
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ready = Command::new("mariadb-admin")
                .args(["--no-defaults", "-uroot", "--connect-timeout=2"])
                .arg(format!("--socket={}", self.dir.join("sock").display()))
                .arg("ping")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "mariadbd did not start: {}",
            std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
        );
    }

    /// Runs SQL as root on the socket; returns stdout (tab-separated, no headers).
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-N", "-B"])
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-e", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Whether `user` can log in with `password` over TCP (a new connection with the
    /// `mariadb` client: an implementation independent of keyd's).
    pub fn can_login(&self, user: &str, password: &str) -> bool {
        mariadb_login(self.port, user, password)
    }

    /// Whether `user`@`localhost` can log in with `password` on the Unix socket.
    pub fn can_login_on_socket(&self, user: &str, password: &str) -> bool {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-N", "-B"])
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-u", user, "-e", "SELECT CURRENT_USER()"])
            .env("MYSQL_PWD", password)
            .output()
            .unwrap();
        out.status.success()
    }

    /// The server's general log: every connection and statement it received.
    pub fn general_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("general.log")).unwrap_or_default()
    }
}

/// A new connection as `user` over TCP to 127.0.0.1:`port` with the `mariadb` client, running
/// `SELECT 1`; the password goes through the client's environment, not its arguments.
pub fn mariadb_login(port: u16, user: &str, password: &str) -> bool {
    mariadb_query(port, user, password, "SELECT 1").as_deref() == Some("1")
}

/// What `sql` prints (tab-separated, no headers) on a new connection as `user` over TCP to
/// 127.0.0.1:`port` with the `mariadb` client, or `None` when the login or the query fails.
pub fn mariadb_query(port: u16, user: &str, password: &str, sql: &str) -> Option<String> {
    let out: Output = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-N",
            "-B",
            "--connect-timeout=5",
            "-h",
            "127.0.0.1",
        ])
        .args(["-P", &port.to_string(), "-u", user, "-e", sql])
        .env("MYSQL_PWD", password)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    out.status.success().then_some(stdout)
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
