//! Blocking sockets to targets whose clients keyd writes itself (Redis, MySQL): every read and
//! write bounded by a deadline, the host name resolved within it, and TLS (rustls) started on
//! the socket when the protocol asks for it, at once (`rediss://`) or after a plaintext
//! greeting (MySQL's SSL request). A timeout is an error of kind [`ErrorKind::TimedOut`].

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A connection to a server, plain or TLS, over a [`Timed`] socket.
pub(crate) enum Conn {
    /// Plain TCP.
    Plain(Timed),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Timed>>),
}

impl Conn {
    /// Sets the deadline of the next reads and writes (one command and its answer).
    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        match self {
            Conn::Plain(t) => t.deadline = deadline,
            Conn::Tls(s) => s.sock.deadline = deadline,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(t) => t.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(t) => t.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(t) => t.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A TCP socket whose reads and writes fail with [`ErrorKind::TimedOut`] once its deadline has
/// passed: a server that answers slowly, a byte at a time, is bounded as surely as one that
/// never answers.
pub(crate) struct Timed {
    stream: TcpStream,
    deadline: Instant,
}

impl Timed {
    /// The time left before the deadline, or the error once it has passed.
    fn left(&self) -> std::io::Result<Duration> {
        left_until(self.deadline)
    }
}

/// The time left before `deadline`, or a [`ErrorKind::TimedOut`] error once it has passed.
fn left_until(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(std::io::Error::new(ErrorKind::TimedOut, "timed out"))
    } else {
        Ok(left)
    }
}

/// A socket timeout reads as EAGAIN on Linux: reported as what it is.
fn timed_out(e: std::io::Error) -> std::io::Error {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            std::io::Error::new(ErrorKind::TimedOut, "timed out")
        }
        _ => e,
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        self.stream.read(buf).map_err(timed_out)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        self.stream.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Resolves `host` and connects to its first address on `port`, both before `deadline`; the
/// socket's reads and writes are bounded by the same deadline until it is moved.
pub(crate) fn connect(host: &str, port: u16, deadline: Instant) -> std::io::Result<Timed> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    };
    let addrs = resolve_within(addr.clone(), left_until(deadline)?, system_resolve)?;
    let first = addrs
        .first()
        .ok_or_else(|| std::io::Error::other(format!("{addr} does not resolve")))?;
    let stream = TcpStream::connect_timeout(first, left_until(deadline)?).map_err(timed_out)?;
    let _ = stream.set_nodelay(true);
    Ok(Timed { stream, deadline })
}

/// Starts TLS on `socket` to `host` (its name is sent and, as `config` says, checked), and
/// completes the handshake before the socket's deadline, so a refused certificate fails here
/// rather than at the first command. A refused certificate reads as one.
pub(crate) fn start_tls(
    socket: Timed,
    config: Arc<rustls::ClientConfig>,
    host: &str,
) -> std::io::Result<Conn> {
    let name = super::tls::server_name(host).map_err(std::io::Error::other)?;
    let client = rustls::ClientConnection::new(config, name)
        .map_err(|e| std::io::Error::other(format!("TLS setup failed: {e}")))?;
    let mut tls = rustls::StreamOwned::new(client, socket);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| {
            if e.kind() == ErrorKind::TimedOut {
                e
            } else {
                std::io::Error::other(super::tls::describe(&e))
            }
        })?;
    }
    Ok(Conn::Tls(Box::new(tls)))
}

/// Resolves `addr` with `resolve` within `timeout`. getaddrinfo has no timeout of its own (a
/// dead DNS server holds it for the resolver's retries, tens of seconds), so it runs on a
/// thread of its own; when the time is up the caller gets [`ErrorKind::TimedOut`] and the
/// thread is left to finish and exit.
fn resolve_within(
    addr: String,
    timeout: Duration,
    resolve: fn(&str) -> std::io::Result<Vec<std::net::SocketAddr>>,
) -> std::io::Result<Vec<std::net::SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("keyd-resolve".into())
        .spawn(move || {
            let _ = tx.send(resolve(&addr));
        })?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(std::io::Error::new(
            ErrorKind::TimedOut,
            "timed out resolving the host name",
        ))
    })
}

/// The system's resolver (getaddrinfo), which blocks for as long as it takes.
fn system_resolve(addr: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
    Ok(std::net::ToSocketAddrs::to_socket_addrs(addr)?.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_resolves_slowly_is_bounded_by_the_timeout() {
        fn slow(_: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
            std::thread::sleep(Duration::from_secs(3));
            Ok(Vec::new())
        }
        let started = Instant::now();
        let e = resolve_within("slow.example:6379".into(), Duration::from_millis(200), slow)
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    }
}
