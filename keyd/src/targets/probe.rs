//! Whether a target's server answers at all: a plain TCP connect to the host and port its
//! admin URL names, within a timeout (the host name resolved within it too). No login, no
//! byte sent: a probe proves the port accepts connections, not that keyd's credentials work,
//! and so it costs the target nothing but an accepted and closed connection. For `/metrics`'
//! `keyd_target_up`. Blocks: the daemon runs it on the blocking pool.

use std::time::{Duration, Instant};

use crate::policy::{TargetKind, TargetSpec};

/// The host and port `spec`'s admin URL connects to over TCP; `None` for a URL that is not
/// understood or reaches its server some other way (a PostgreSQL Unix socket directory).
pub fn address(spec: &TargetSpec) -> Option<(String, u16)> {
    match spec.kind {
        // A PgBouncer's admin console speaks the PostgreSQL protocol: its URL is read alike.
        TargetKind::Postgres { .. } | TargetKind::Pgbouncer { .. } => {
            let config: tokio_postgres::Config = spec.url.parse().ok()?;
            let host = match config.get_hosts().first()? {
                tokio_postgres::config::Host::Tcp(host) => host.clone(),
                tokio_postgres::config::Host::Unix(_) => return None,
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            Some((host, port))
        }
        TargetKind::Mysql => super::mysql::host_and_port(&spec.url),
        // The management API: keyd's own calls go there first.
        TargetKind::Rabbitmq { .. } => super::rabbitmq::host_and_port(&spec.url),
        TargetKind::Redis { .. } => super::resp::RedisUrl::parse(&spec.url)
            .ok()
            .map(|url| (url.host, url.port)),
    }
}

/// Whether a TCP connection to `host`:`port` is accepted within `timeout`.
pub fn reachable(host: &str, port: u16, timeout: Duration) -> bool {
    super::socket::connect(host, port, Instant::now() + timeout).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AdminPassword;

    fn spec(kind: TargetKind, url: &str) -> TargetSpec {
        TargetSpec {
            name: "db".into(),
            kind,
            url: url.into(),
            password: AdminPassword::None,
            timeout: TargetSpec::DEFAULT_TIMEOUT,
            allow_insecure_auth: false,
        }
    }

    #[test]
    fn each_kind_of_url_gives_its_host_and_port_or_its_default_port() {
        let redis = TargetKind::Redis {
            user: "default".into(),
            replicas: vec![],
        };
        let cases = [
            (
                TargetKind::Postgres { pgbouncer: None },
                "postgresql://admin@db:6543/app",
                Some(("db", 6543)),
            ),
            (
                TargetKind::Postgres { pgbouncer: None },
                "postgresql://admin@db/app",
                Some(("db", 5432)),
            ),
            (
                TargetKind::Postgres { pgbouncer: None },
                "postgresql://admin@%2Frun%2Fpostgresql/app",
                None,
            ),
            (
                TargetKind::Mysql,
                "mysql://root@db:3307/",
                Some(("db", 3307)),
            ),
            (TargetKind::Mysql, "mysql://root@db", Some(("db", 3306))),
            (
                TargetKind::Rabbitmq {
                    amqp: "amqp://rabbit/".into(),
                },
                "http://admin@rabbit",
                Some(("rabbit", 15672)),
            ),
            (
                TargetKind::Rabbitmq {
                    amqp: "amqp://rabbit/".into(),
                },
                "https://admin@rabbit:8443/?ca=/ca.pem",
                Some(("rabbit", 8443)),
            ),
            (redis.clone(), "redis://cache:6380", Some(("cache", 6380))),
            (redis, "rediss://u@cache", Some(("cache", 6379))),
        ];
        for (kind, url, expected) in cases {
            let found = address(&spec(kind, url));
            let expected = expected.map(|(h, p)| (h.to_owned(), p));
            assert_eq!(found, expected, "{url}");
        }
    }

    #[test]
    fn a_closed_port_is_down_and_a_listening_one_is_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(reachable("127.0.0.1", port, Duration::from_secs(2)));
        drop(listener);
        assert!(!reachable("127.0.0.1", port, Duration::from_secs(2)));
    }
}
