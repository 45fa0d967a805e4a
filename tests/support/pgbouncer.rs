//! A real PgBouncer for tests, in front of a test PostgreSQL: its configuration, `auth_file`
//! and log in a temporary directory, listening on a free loopback port, with SCRAM
//! authentication against `auth_file` and a database `app` passed through to the server;
//! stopped when dropped. PgBouncer refuses to run as root: run as root (CI), it drops to
//! Debian's `postgres` user. Logins through it are checked with the real `psql`. Started with
//! a certificate, it takes clients over TLS only (`client_tls_sslmode = require`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;
use crate::servers::{Postgres, ServerCert, free_port};

/// A PgBouncer whose admin console user is `admin` (a plaintext line of `auth_file`).
pub struct Pgbouncer {
    /// Its directory (pgbouncer.ini, userlist.txt, pgbouncer.log).
    pub dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The console admin's password.
    pub admin_password: String,
    /// The CA its clients trust (its own certificate), when it takes TLS.
    pub tls_ca: Option<PathBuf>,
    child: Child,
}

/// `psql` on a new connection to `port` as `user` to database `db` (the password through
/// psql's environment, not its arguments).
pub fn psql_to(port: u16, user: &str, password: &str, db: &str, sql: &str) -> Output {
    psql_command(port, user, password, db, sql)
        .output()
        .unwrap()
}

fn psql_command(port: u16, user: &str, password: &str, db: &str, sql: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        user,
        "-d",
        db,
        "-tAc",
        sql,
    ])
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "5");
    cmd
}

impl Pgbouncer {
    /// Starts a PgBouncer in front of `pg`'s database `app` (which must exist), with
    /// `extra_lines` in `auth_file` after the admin's.
    pub fn start(tag: &str, pg: &Postgres, extra_lines: &str) -> Pgbouncer {
        Pgbouncer::start_with(tag, pg, extra_lines, None)
    }

    /// Like [`Pgbouncer::start`]; with `tls`, clients must use TLS and are shown that
    /// certificate (the connection to the server behind stays plain, on loopback).
    pub fn start_with(
        tag: &str,
        pg: &Postgres,
        extra_lines: &str,
        tls: Option<ServerCert<'_>>,
    ) -> Pgbouncer {
        let dir = TempDir::new(&format!("pgbouncer-{tag}"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        let admin_password = format!("pgb-admin-{}", std::process::id());
        let userlist = dir.join("userlist.txt");
        std::fs::write(
            &userlist,
            format!("\"admin\" \"{admin_password}\"\n{extra_lines}"),
        )
        .unwrap();
        std::fs::set_permissions(&userlist, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut tls_lines = String::new();
        let mut tls_ca = None;
        if let Some(tls) = tls {
            for (name, pem) in [("server.crt", tls.cert_pem), ("server.key", tls.key_pem)] {
                std::fs::write(dir.join(name), pem).unwrap();
                // Readable by the `postgres` user PgBouncer runs as under root.
                std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))
                    .unwrap();
            }
            tls_lines = format!(
                "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
                dir.join("server.crt").display(),
                dir.join("server.key").display(),
            );
            tls_ca = Some(dir.join("server.crt"));
        }
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\napp = host=127.0.0.1 port={pg_port} dbname=app\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = scram-sha-256\nauth_file = {userlist}\nadmin_users = admin\n\
                 pool_mode = session\nlogfile = {log}\npidfile = {pid}\n{tls_lines}",
                pg_port = pg.port,
                userlist = userlist.display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = if rustix::process::getuid().is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
            cmd.arg(pgbouncer_bin());
            cmd
        } else {
            Command::new(pgbouncer_bin())
        };
        let child = cmd
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pgb = Pgbouncer {
            dir,
            port,
            admin_password,
            tls_ca,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start: {}",
                pgb.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pgb
    }

    /// Its `auth_file`.
    pub fn auth_file(&self) -> PathBuf {
        self.dir.join("userlist.txt")
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// Whether `user` logs in with `password` through the pooler to database `app` (and the
    /// server, behind it, answers as that user).
    pub fn can_login(&self, user: &str, password: &str) -> bool {
        let mut cmd = psql_command(self.port, user, password, "app", "SELECT current_user");
        if let Some(ca) = &self.tls_ca {
            cmd.env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", ca);
        }
        let out = cmd.output().unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == user
    }
}

/// Debian's pgbouncer.
fn pgbouncer_bin() -> PathBuf {
    let path = PathBuf::from("/usr/sbin/pgbouncer");
    assert!(
        path.exists(),
        "PgBouncer is not installed (.ci/run installs Debian's pgbouncer)"
    );
    path
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
