//! Real PostgreSQL and Redis servers for tests: each started in its own temporary directory on
//! a free loopback port, stopped when dropped. PostgreSQL runs as Debian's `postgres` user
//! (it refuses to run as root, and CI runs as root).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::TempDir;

/// A free TCP port on 127.0.0.1 (bound and released; tests run few servers, so the window in
/// which another process could take it is harmless).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join(name).exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("no PostgreSQL server binaries")
        .join(name)
}

/// A PostgreSQL server with a superuser `admin`.
pub struct Postgres {
    /// Its directory (data, socket, log).
    pub dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The superuser's password.
    pub admin_password: String,
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    cmd
}

impl Postgres {
    /// initdb (SCRAM authentication, every statement logged) and start.
    pub fn start(tag: &str) -> Postgres {
        let dir = TempDir::new(&format!("pg-{tag}"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let admin_password = format!("admin-{}", std::process::id());
        std::fs::write(dir.join("pwfile"), &admin_password).unwrap();
        std::fs::set_permissions(dir.join("pwfile"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let data = dir.join("data");
        let out = as_postgres(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "admin", "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", dir.join("pwfile").display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Postgres {
            dir,
            port: free_port(),
            admin_password,
        };
        pg.restart();
        pg
    }

    /// The server's log (every statement, with log_statement = all).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) {
        let _ = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts the server (again, after `stop`), waiting until it accepts connections.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c log_statement=all -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether `user` can log in with `password` (a new connection, through psql: an
    /// implementation independent of keyd's client).
    pub fn can_login(&self, user: &str, password: &str) -> bool {
        let out = psql(self.port, user, password, "SELECT current_user");
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == user
    }

    /// Runs SQL as the superuser; returns stdout.
    pub fn admin_sql(&self, sql: &str) -> String {
        let out = psql(self.port, "admin", &self.admin_password, sql);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// Runs one statement through psql on a new connection as `user` (the password goes through
/// psql's environment, not its arguments).
pub fn psql(port: u16, user: &str, password: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            "postgres",
            "-tAc",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A redis-server with an ACL file whose default user has a password.
pub struct Redis {
    /// Its directory (ACL file).
    pub dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The default user's password.
    pub admin_password: String,
    child: Child,
}

impl Redis {
    /// Starts redis-server; `acl_file` gives it an ACL file (else it uses requirepass).
    pub fn start(tag: &str, acl_file: bool) -> Redis {
        let dir = TempDir::new(&format!("redis-{tag}"));
        let admin_password = format!("radmin{}", std::process::id());
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if acl_file {
            std::fs::write(
                dir.join("users.acl"),
                format!("user default on >{admin_password} ~* &* +@all\n"),
            )
            .unwrap();
            cmd.arg("--aclfile").arg(dir.join("users.acl"));
        } else {
            cmd.args(["--requirepass", &admin_password]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server (.ci/run installs Debian's redis-server)");
        let redis = Redis {
            dir,
            port,
            admin_password,
            child,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("redis-server did not start");
    }

    /// Whether `user` can authenticate with `password` on a new connection.
    pub fn can_login(&self, user: &str, password: &str) -> bool {
        redis_ping(self.port, Some(user), password)
    }

    /// Whether the (requirepass) default user accepts `password`.
    pub fn can_auth(&self, password: &str) -> bool {
        redis_ping(self.port, None, password)
    }
}

/// A new connection with redis-cli (a client independent of keyd's): AUTH, then PING. The
/// password goes through redis-cli's environment, not its arguments.
pub fn redis_ping(port: u16, user: Option<&str>, password: &str) -> bool {
    let mut cmd = Command::new("redis-cli");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--no-auth-warning",
    ]);
    if let Some(user) = user {
        cmd.args(["--user", user]);
    }
    let out = cmd
        .arg("PING")
        .env("REDISCLI_AUTH", password)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "PONG"
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
