//! The Redis target. `mode = "acl"`: a new password is added to the ACL user by its SHA-256
//! (`ACL SETUSER u on #<hash>`), so the plaintext never reaches the server and old and new both
//! work during the overlap; retire removes the old one (`!<hash>`). `mode = "requirepass"`:
//! `CONFIG SET requirepass`, a hard cut-over for servers without ACLs. Changes are persisted
//! with `ACL SAVE` (an ACL file) or `CONFIG REWRITE` (a config file), with a warning when
//! neither is possible.

use std::time::Duration;

use super::resp::{RedisUrl, Reply, Resp};
use super::{Credential, Target, TargetError};
use crate::policy::{RedisMode, duration};
use crate::secret::SecretString;

/// A Redis user whose password keyd rotates.
pub struct RedisTarget {
    /// The target's name in the policy.
    pub name: String,
    /// `redis://host:port`.
    pub url: String,
    /// The admin user.
    pub admin_user: String,
    /// The admin password, if any.
    pub admin_password: Option<SecretString>,
    /// The user rotated.
    pub user: String,
    /// ACL rules for a user keyd creates.
    pub acl: String,
    /// ACL or requirepass.
    pub mode: RedisMode,
    /// Replicas whose `masterauth` follows (requirepass).
    pub replicas: Vec<String>,
    /// How long connecting, or one command and its reply, may take.
    pub timeout: Duration,
    /// `AUTH` may go over plain TCP to a host other than loopback (`allow_insecure_auth`).
    pub allow_insecure_auth: bool,
}

fn sha256_hex(value: &SecretString) -> String {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.expose_secret().as_bytes());
    crate::secret::hex(digest.as_ref())
}

impl RedisTarget {
    fn fail(&self, message: impl Into<String>) -> TargetError {
        TargetError {
            target: self.name.clone(),
            message: message.into(),
        }
    }

    /// Describes a connection's error, naming a timeout as one.
    fn describe(&self, e: &std::io::Error) -> String {
        if e.kind() == std::io::ErrorKind::TimedOut {
            format!(
                "no answer, timed out after {}",
                duration::format(self.timeout)
            )
        } else {
            e.to_string()
        }
    }

    fn connect(&self, url: &str) -> Result<Resp, TargetError> {
        let parsed = RedisUrl::parse(url).map_err(|e| self.fail(format!("bad url {url}: {e}")))?;
        if !parsed.tls && !super::tls::is_loopback(&parsed.host) && !self.allow_insecure_auth {
            return Err(self.fail(format!(
                "{url} is plain TCP to another host: AUTH would send the password in cleartext; use rediss:// (TLS), or set allow_insecure_auth = true on the target to allow it"
            )));
        }
        Resp::connect(url, self.timeout)
            .map_err(|e| self.fail(format!("cannot connect to {url}: {}", self.describe(&e))))
    }

    fn run(&self, conn: &mut Resp, args: &[&[u8]]) -> Result<Reply, TargetError> {
        match conn.command(args) {
            Ok(Reply::Error(e)) => {
                Err(self.fail(format!("{} refused: {e}", String::from_utf8_lossy(args[0]))))
            }
            Ok(reply) => Ok(reply),
            Err(e) => Err(self.fail(format!(
                "{}: {}",
                String::from_utf8_lossy(args[0]),
                self.describe(&e)
            ))),
        }
    }

    /// An admin session on `url`.
    fn admin(&self, url: &str) -> Result<Resp, TargetError> {
        let mut conn = self.connect(url)?;
        if let Some(password) = &self.admin_password {
            let reply = conn
                .command(&[
                    b"AUTH",
                    self.admin_user.as_bytes(),
                    password.expose_secret().as_bytes(),
                ])
                .map_err(|e| self.fail(format!("AUTH: {}", self.describe(&e))))?;
            if let Reply::Error(e) = reply {
                return Err(self.fail(format!(
                    "the admin login as {:?} was refused: {e}",
                    self.admin_user
                )));
            }
        }
        Ok(conn)
    }

    /// Persists an ACL or config change, warning when the server cannot.
    fn persist(&self, conn: &mut Resp) {
        let acl_file = match conn.command(&[b"CONFIG", b"GET", b"aclfile"]) {
            Ok(Reply::Array(Some(items))) => {
                matches!(items.get(1), Some(Reply::Bulk(Some(v))) if !v.is_empty())
            }
            _ => false,
        };
        let (what, result) = if acl_file && self.mode == RedisMode::Acl {
            ("ACL SAVE", conn.command(&[b"ACL", b"SAVE"]))
        } else {
            ("CONFIG REWRITE", conn.command(&[b"CONFIG", b"REWRITE"]))
        };
        if !matches!(result, Ok(Reply::Simple(_))) {
            crate::log::warn(format_args!(
                "target {}: {what} failed, the change lives in memory only and a Redis restart would undo it (start Redis with an aclfile or a config file)",
                self.name
            ));
        }
    }

    fn login(&self, password: &SecretString) -> Result<bool, TargetError> {
        let mut conn = self.connect(&self.url)?;
        let reply = match self.mode {
            RedisMode::Acl => conn.command(&[
                b"AUTH",
                self.user.as_bytes(),
                password.expose_secret().as_bytes(),
            ]),
            RedisMode::Requirepass => conn.command(&[b"AUTH", password.expose_secret().as_bytes()]),
        }
        .map_err(|e| self.fail(format!("AUTH: {}", self.describe(&e))))?;
        match reply {
            Reply::Simple(_) => {
                let pong = conn
                    .command(&[b"PING"])
                    .map_err(|e| self.fail(format!("PING: {}", self.describe(&e))))?;
                Ok(pong == Reply::Simple("PONG".into()))
            }
            Reply::Error(e)
                if e.contains("WRONGPASS")
                    || e.contains("invalid")
                    || e.contains("no password") =>
            {
                Ok(false)
            }
            Reply::Error(e) => Err(self.fail(format!("AUTH: {e}"))),
            _ => Err(self.fail("AUTH: unexpected reply")),
        }
    }
}

impl Target for RedisTarget {
    fn next_login(&self, _current: Option<&str>) -> Option<String> {
        None
    }

    fn accepts(&self, credential: &Credential<'_>) -> Result<bool, TargetError> {
        self.login(credential.password)
    }

    fn set(
        &self,
        pending: &Credential<'_>,
        _current: Option<&Credential<'_>>,
    ) -> Result<(), TargetError> {
        let mut conn = self.admin(&self.url)?;
        match self.mode {
            RedisMode::Acl => {
                let hash = format!("#{}", sha256_hex(pending.password));
                let exists = !matches!(
                    self.run(&mut conn, &[b"ACL", b"GETUSER", self.user.as_bytes()])?,
                    Reply::Array(None) | Reply::Bulk(None)
                );
                let mut args: Vec<&[u8]> = vec![
                    b"ACL",
                    b"SETUSER",
                    self.user.as_bytes(),
                    b"on",
                    hash.as_bytes(),
                ];
                if !exists {
                    args.extend(self.acl.split_whitespace().map(str::as_bytes));
                }
                self.run(&mut conn, &args)?;
            }
            RedisMode::Requirepass => {
                let value = pending.password.expose_secret().as_bytes();
                for replica in &self.replicas {
                    let mut r = self.admin(replica)?;
                    self.run(&mut r, &[b"CONFIG", b"SET", b"masterauth", value])?;
                    self.persist(&mut r);
                }
                self.run(&mut conn, &[b"CONFIG", b"SET", b"requirepass", value])?;
            }
        }
        self.persist(&mut conn);
        Ok(())
    }

    fn test(&self, pending: &Credential<'_>) -> Result<(), TargetError> {
        if self.login(pending.password)? {
            Ok(())
        } else {
            Err(self.fail(format!(
                "a new login as {:?} with the new password was refused",
                self.user
            )))
        }
    }

    fn retire(&self, old: &Credential<'_>, _current: &Credential<'_>) -> Result<(), TargetError> {
        if self.mode == RedisMode::Requirepass {
            return Ok(()); // the old password stopped working at set
        }
        let mut conn = self.admin(&self.url)?;
        let hash = format!("!{}", sha256_hex(old.password));
        match conn.command(&[b"ACL", b"SETUSER", self.user.as_bytes(), hash.as_bytes()]) {
            Ok(Reply::Simple(_)) => {}
            // Already removed (a repeated retire): nothing to do.
            Ok(Reply::Error(e)) if e.contains("not") => {}
            Ok(Reply::Error(e)) => return Err(self.fail(format!("ACL SETUSER refused: {e}"))),
            Ok(_) => {}
            Err(e) => {
                return Err(self.fail(format!("ACL SETUSER: {}", self.describe(&e))));
            }
        }
        self.persist(&mut conn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;
    use crate::targets::resp::MAX_BULK;

    /// A one-connection server on loopback that reads a little and then answers `reply`.
    fn fake_redis(reply: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.read(&mut [0; 1024]);
            let _ = stream.write_all(&reply);
        });
        (url, server)
    }

    fn target(url: String) -> RedisTarget {
        RedisTarget {
            name: "cache".into(),
            url,
            admin_user: "default".into(),
            admin_password: None,
            user: "app".into(),
            acl: "~* +@all".into(),
            mode: RedisMode::Acl,
            replicas: Vec::new(),
            timeout: Duration::from_secs(10),
            allow_insecure_auth: false,
        }
    }

    /// The error `set` returns against a server that answers `reply`.
    fn set_error(reply: Vec<u8>) -> String {
        let (url, server) = fake_redis(reply);
        let password = SecretString::new("pending-value".into());
        let credential = Credential {
            login: None,
            password: &password,
        };
        let e = target(url).set(&credential, None).unwrap_err().to_string();
        server.join().unwrap();
        e
    }

    #[test]
    fn a_plain_redis_url_to_another_host_is_refused_before_connecting() {
        let password = SecretString::new("pending-value".into());
        let credential = Credential {
            login: None,
            password: &password,
        };
        let e = target("redis://cache.example.com:6379".into())
            .set(&credential, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("target cache: redis://cache.example.com:6379 is plain TCP to another host: AUTH would send the password in cleartext; use rediss:// (TLS), or set allow_insecure_auth = true"),
            "{e}"
        );
    }

    #[test]
    fn redis_urls() {
        assert_eq!(
            RedisUrl::parse("rediss://u@cache:6380/2?ca=/etc/ca.pem").unwrap(),
            RedisUrl {
                tls: true,
                host: "cache".into(),
                port: 6380,
                ca: Some("/etc/ca.pem".into()),
            }
        );
        assert_eq!(RedisUrl::parse("redis://[::1]").unwrap().port, 6379);
        assert!(RedisUrl::parse("rediss://cache?cert=x").is_err());
    }

    #[test]
    fn a_redis_server_answering_a_ten_gigabyte_bulk_string_gets_a_clear_error() {
        let e = set_error(b"$9999999999\r\nxx".to_vec());
        assert!(
            e.starts_with("target cache: ACL: malformed reply: a bulk string of 9999999999 bytes exceeds the 1 MiB limit"),
            "{e}"
        );
        assert!(!e.contains("pending-value"), "{e}");
    }

    #[test]
    fn a_redis_server_streaming_a_reply_of_more_than_two_mebibytes_gets_a_clear_error() {
        let mut reply = b"*3\r\n".to_vec();
        for _ in 0..3 {
            reply.extend_from_slice(format!("${}\r\n", MAX_BULK).as_bytes());
            reply.extend(std::iter::repeat_n(b'x', MAX_BULK));
            reply.extend_from_slice(b"\r\n");
        }
        let e = set_error(reply);
        assert_eq!(
            e,
            "target cache: ACL: malformed reply: a reply longer than 2 MiB"
        );
    }
}
