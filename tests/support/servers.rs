//! Real PostgreSQL and Redis servers for tests: each started in its own temporary directory on
//! a free loopback port, stopped when dropped. PostgreSQL runs as Debian's `postgres` user
//! (it refuses to run as root, and CI runs as root).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::TempDir;

/// A free TCP port on 127.0.0.1 for a server a test starts: bound once to check it is free,
/// then released for the server to bind.
///
/// The port is taken below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`),
/// where `bind(0)` would pick it: a port from that range, once released, can become the
/// source port of any outgoing connection on the machine before the server binds it (a
/// RabbitMQ node's AMQPS listener failed with `eaddrinuse` that way, under `cargo test`,
/// where a binary's tests run side by side). One test process never hands a port out twice,
/// and each process starts at its own place in the range, so parallel test processes rarely
/// try the same ports.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (low, high) = ports_below_the_ephemeral_range();
    let span = u32::from(high - low) + 1;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let start = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % span;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = low + u16::try_from((start + i) % span).unwrap();
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between {low} and {high}");
}

/// The ports [`free_port`] takes from: from 10000 to just below the ephemeral range (32768 by
/// the kernel's default), or from 10000 to 20000 when that range starts too low to leave room.
fn ports_below_the_ephemeral_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12000 {
        (10000, ephemeral_low - 1)
    } else {
        (10000, 20000)
    }
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

/// The uid and gid owning `data` (initdb ran as `postgres`).
fn postgres_ids(data: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(data).unwrap();
    (meta.uid(), meta.gid())
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    cmd
}

/// A certificate and its private key (PEM) a test server presents.
pub struct ServerCert<'a> {
    /// The certificate, PEM.
    pub cert_pem: &'a str,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: &'a str,
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made by keyd's own `tls` kind: the
/// server presents it and clients trust it as their CA. Returns (certificate, key) PEM.
pub fn localhost_cert() -> (String, String) {
    let cert = keyd::material::tls::generate(&keyd::material::tls::TlsSpec {
        cn: "localhost".into(),
        sans: vec!["localhost".into(), "127.0.0.1".into()],
        days: 1,
        key_type: keyd::material::tls::KeyType::EcdsaP256,
    })
    .unwrap();
    (
        cert.cert_pem.clone(),
        cert.key_pem.expose_secret().to_owned(),
    )
}

impl Postgres {
    /// initdb (SCRAM authentication, every statement logged) and start.
    pub fn start(tag: &str) -> Postgres {
        Postgres::start_with(tag, None)
    }

    /// Like [`Postgres::start`], with `ssl = on` and `tls` as the server's certificate when
    /// given; pg_hba.conf then accepts TCP logins only over TLS (`hostssl`), and connections
    /// are logged (`log_connections`, which says whether SSL was used).
    pub fn start_with(tag: &str, tls: Option<ServerCert<'_>>) -> Postgres {
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
        if let Some(tls) = tls {
            for (name, pem) in [("server.crt", tls.cert_pem), ("server.key", tls.key_pem)] {
                let path = data.join(name);
                std::fs::write(&path, pem).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                let (uid, gid) = postgres_ids(&data);
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nlog_connections = on\n");
            std::fs::write(data.join("postgresql.conf"), conf).unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .unwrap();
        }
        let pg = Postgres {
            dir,
            port: free_port(),
            admin_password,
        };
        pg.restart();
        pg
    }

    /// Replaces pg_hba.conf's TCP rule with `host all all 127.0.0.1/32 METHOD` (e.g.
    /// `password`, `md5`) and restarts the server.
    pub fn set_host_auth(&self, method: &str) {
        let data = self.dir.join("data");
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all scram-sha-256\nhost all all 127.0.0.1/32 {method}\n"),
        )
        .unwrap();
        self.stop();
        self.restart();
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
    /// The CA file clients verify the server with, when it speaks TLS only.
    pub tls_ca: Option<PathBuf>,
    child: Child,
}

impl Redis {
    /// Starts redis-server; `acl_file` gives it an ACL file (else it uses requirepass).
    pub fn start(tag: &str, acl_file: bool) -> Redis {
        Redis::start_with(tag, acl_file, None)
    }

    /// Like [`Redis::start`]; with `tls`, the server speaks TLS only (`--port 0 --tls-port`),
    /// presenting that certificate, and clients verify it with the certificate itself as CA.
    pub fn start_with(tag: &str, acl_file: bool, tls: Option<ServerCert<'_>>) -> Redis {
        let dir = TempDir::new(&format!("redis-{tag}"));
        let admin_password = format!("radmin{}", std::process::id());
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        let mut tls_ca = None;
        if let Some(tls) = tls {
            std::fs::write(dir.join("server.crt"), tls.cert_pem).unwrap();
            std::fs::write(dir.join("server.key"), tls.key_pem).unwrap();
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .args(["--tls-auth-clients", "no"]);
            tls_ca = Some(dir.join("server.crt"));
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        cmd.args([
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
            tls_ca,
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
        redis_cli_ping(self.port, self.tls_ca.as_deref(), Some(user), password)
    }

    /// Whether the (requirepass) default user accepts `password`.
    pub fn can_auth(&self, password: &str) -> bool {
        redis_cli_ping(self.port, self.tls_ca.as_deref(), None, password)
    }
}

/// A new connection with redis-cli (a client independent of keyd's): AUTH, then PING. The
/// password goes through redis-cli's environment, not its arguments.
pub fn redis_ping(port: u16, user: Option<&str>, password: &str) -> bool {
    redis_cli_ping(port, None, user, password)
}

/// [`redis_ping`], over TLS verified with `tls_ca` when given.
pub fn redis_cli_ping(
    port: u16,
    tls_ca: Option<&Path>,
    user: Option<&str>,
    password: &str,
) -> bool {
    let mut cmd = Command::new("redis-cli");
    if let Some(ca) = tls_ca {
        cmd.args(["--tls", "--cacert"]).arg(ca);
    }
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

/// A TCP proxy on loopback in front of `127.0.0.1:port` that records every byte clients send
/// (to check what went on the wire, e.g. that no password did).
pub struct RecordingProxy {
    /// The proxy's port.
    pub port: u16,
    sent: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl RecordingProxy {
    /// Starts forwarding to `127.0.0.1:port`, one pair of threads per connection.
    pub fn start(port: u16) -> RecordingProxy {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let record = record.clone();
                let connection = {
                    let mut all = record.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                std::thread::spawn(move || {
                    let mut buf = [0; 4096];
                    while let Ok(n) = client_in.read(&mut buf) {
                        if n == 0 || server_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap()[connection].extend_from_slice(&buf[..n]);
                    }
                    let _ = server_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut server_in, mut client_out) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_in, &mut client_out);
                    let _ = client_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        RecordingProxy {
            port: proxy_port,
            sent,
        }
    }

    /// The bytes clients have sent so far, one entry per connection in order of arrival.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.sent.lock().unwrap().clone()
    }
}

/// A man in the middle for PostgreSQL clients: it answers a client's SSLRequest, ends the
/// client's TLS with a certificate of its own, and relays the plaintext to a server on
/// `127.0.0.1:port` over plain TCP. The server then offers SCRAM-SHA-256 without its -PLUS
/// (channel binding) form, and a client that does not insist on channel binding logs in to
/// the real server through the relay.
pub struct PgTlsRelay {
    /// The relay's port.
    pub port: u16,
}

impl PgTlsRelay {
    /// Starts relaying to `127.0.0.1:port`, presenting `cert` (one thread per connection).
    pub fn start(port: u16, cert: ServerCert<'_>) -> PgTlsRelay {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let relay_port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = relay(client, config, port);
                });
            }
        });
        PgTlsRelay { port: relay_port }
    }
}

/// Relays one client connection (see [`PgTlsRelay`]) until either side closes.
fn relay(
    mut client: std::net::TcpStream,
    config: std::sync::Arc<rustls::ServerConfig>,
    port: u16,
) -> std::io::Result<()> {
    use std::io::{ErrorKind, Read as _, Write as _};
    let mut request = [0; 8];
    client.read_exact(&mut request)?;
    if request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
        return Ok(()); // not an SSLRequest: this relay speaks TLS only
    }
    client.write_all(b"S")?;
    let connection = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, client);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let mut server = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let tick = Some(std::time::Duration::from_millis(5));
    tls.sock.set_read_timeout(tick)?;
    server.set_read_timeout(tick)?;
    let idle = |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut buf = [0; 16 << 10];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => server.write_all(&buf[..n])?,
            Err(e) if idle(&e) => {}
            Err(e) => return Err(e),
        }
        match server.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                tls.write_all(&buf[..n])?;
                tls.flush()?;
            }
            Err(e) if idle(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_lie_below_the_ephemeral_range_and_are_never_given_twice() {
        let (low, high) = ports_below_the_ephemeral_range();
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was given twice");
        assert!(ports.iter().all(|p| (low..=high).contains(p)), "{ports:?}");
    }
}
