//! An AMQP 0-9-1 login, as a client opens a connection: the protocol header, `Connection.Start`
//! answered by `Start-Ok` with the PLAIN mechanism, `Tune` answered by `Tune-Ok`, `Open` of the
//! virtual host, and `Close` once `Open-Ok` came. Only `Open-Ok` proves the login: the password
//! is right and the user may use the virtual host. No channel is opened, nothing published.
//!
//! The client announces `authentication_failure_close`, so a refused password comes back as a
//! `Connection.Close` (403 ACCESS_REFUSED) rather than a dropped socket; a socket closed before
//! `Tune` is read as a refusal too (servers that do not honour the capability). Every read and
//! write is bounded by the caller's deadline.

use std::io::{Read, Write};

use crate::secret::SecretString;

/// The protocol header of AMQP 0-9-1.
const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// A method frame.
const FRAME_METHOD: u8 = 1;
/// A heartbeat frame (skipped).
const FRAME_HEARTBEAT: u8 = 8;
/// The byte that ends every frame.
const FRAME_END: u8 = 0xCE;
/// The largest frame read during the handshake (RabbitMQ's `Start` is a few kB).
const MAX_FRAME: usize = 1 << 20;
/// The connection class and its methods.
const CONNECTION: u16 = 10;
const START: u16 = 10;
const START_OK: u16 = 11;
const TUNE: u16 = 30;
const TUNE_OK: u16 = 31;
const OPEN: u16 = 40;
const OPEN_OK: u16 = 41;
const CLOSE: u16 = 50;
const CLOSE_OK: u16 = 51;

/// How a login ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// `Connection.Open-Ok`: the login works on the virtual host.
    Accepted,
    /// The server refused: its reply code and text (`403 ACCESS_REFUSED …`), or that it
    /// closed the connection.
    Refused(String),
}

/// A method frame's class, method and arguments.
struct Method {
    class: u16,
    method: u16,
    args: Vec<u8>,
}

/// Reads the next method frame on channel 0, skipping heartbeats; `Ok(None)` when the server
/// closed the connection.
fn read_method(conn: &mut impl Read) -> std::io::Result<Option<Method>> {
    loop {
        let mut header = [0u8; 7];
        match conn.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e),
        }
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        if size > MAX_FRAME {
            return Err(malformed("a frame larger than 1 MiB"));
        }
        let mut payload = vec![0u8; size + 1];
        conn.read_exact(&mut payload)?;
        if payload.pop() != Some(FRAME_END) {
            return Err(malformed("a frame without its end byte"));
        }
        match header[0] {
            FRAME_HEARTBEAT => continue,
            FRAME_METHOD if payload.len() >= 4 => {
                return Ok(Some(Method {
                    class: u16::from_be_bytes([payload[0], payload[1]]),
                    method: u16::from_be_bytes([payload[2], payload[3]]),
                    args: payload.split_off(4),
                }));
            }
            other => return Err(malformed(&format!("an unexpected frame of type {other}"))),
        }
    }
}

fn malformed(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the AMQP server sent {what}"),
    )
}

/// Writes one method frame on channel 0 (the buffer is zeroed after: `Start-Ok` holds the
/// password).
fn write_method(conn: &mut impl Write, method: u16, args: &[u8]) -> std::io::Result<()> {
    let size = u32::try_from(args.len() + 4).map_err(|_| malformed("too much"))?;
    let mut frame = zeroize::Zeroizing::new(Vec::with_capacity(args.len() + 12));
    frame.push(FRAME_METHOD);
    frame.extend_from_slice(&0u16.to_be_bytes());
    frame.extend_from_slice(&size.to_be_bytes());
    frame.extend_from_slice(&CONNECTION.to_be_bytes());
    frame.extend_from_slice(&method.to_be_bytes());
    frame.extend_from_slice(args);
    frame.push(FRAME_END);
    conn.write_all(&frame)?;
    conn.flush()
}

fn short_str(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    let len = u8::try_from(s.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a name longer than 255 bytes",
        )
    })?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn long_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// The client properties: who connects, and that a refused login should be told as such.
fn client_properties() -> Vec<u8> {
    let mut capabilities = Vec::new();
    capabilities.push(28);
    capabilities.extend_from_slice(b"authentication_failure_close");
    capabilities.extend_from_slice(b"t\x01");
    let mut table = Vec::new();
    table.push(7);
    table.extend_from_slice(b"product");
    table.push(b'S');
    long_bytes(&mut table, b"keyd");
    table.push(12);
    table.extend_from_slice(b"capabilities");
    table.push(b'F');
    long_bytes(&mut table, &capabilities);
    let mut out = Vec::new();
    long_bytes(&mut out, &table);
    out
}

/// The `Start-Ok` arguments: PLAIN with `\0user\0password`.
fn start_ok(user: &str, password: &SecretString) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut args = zeroize::Zeroizing::new(client_properties());
    short_str(&mut args, "PLAIN")?;
    let mut response = zeroize::Zeroizing::new(Vec::new());
    response.push(0);
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.extend_from_slice(password.expose_secret().as_bytes());
    long_bytes(&mut args, &response);
    short_str(&mut args, "en_US")?;
    Ok(args)
}

/// `Connection.Close`'s reply code and text.
fn close_reason(args: &[u8]) -> String {
    let code = args
        .get(..2)
        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    let text = args
        .get(2)
        .and_then(|&len| args.get(3..3 + len as usize))
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    format!("{code} {text}")
}

/// Whether the mechanisms of `Connection.Start` (after version bytes and the server's
/// properties) include PLAIN.
fn offers_plain(args: &[u8]) -> bool {
    let Some(table_len) = args
        .get(2..6)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return false;
    };
    let at = 6 + table_len;
    let Some(len) = args
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return false;
    };
    args.get(at + 4..at + 4 + len)
        .is_some_and(|m| m.split(|&b| b == b' ').any(|m| m == b"PLAIN"))
}

/// Logs in as `user` with `password` on `vhost` over `conn` (connected, TLS started where
/// asked, every read and write bounded by a deadline) and closes the connection again.
pub(crate) fn login(
    mut conn: impl Read + Write,
    vhost: &str,
    user: &str,
    password: &SecretString,
) -> std::io::Result<LoginOutcome> {
    let closed = || {
        Ok(LoginOutcome::Refused(
            "the server closed the connection".into(),
        ))
    };
    conn.write_all(PROTOCOL_HEADER)?;
    conn.flush()?;
    let Some(start) = read_method(&mut conn)? else {
        return Err(malformed(
            "no Connection.Start (is this an AMQP 0-9-1 port?)",
        ));
    };
    if (start.class, start.method) != (CONNECTION, START) {
        return Err(malformed(
            "no Connection.Start (is this an AMQP 0-9-1 port?)",
        ));
    }
    if !offers_plain(&start.args) {
        return Err(malformed("no PLAIN mechanism in Connection.Start"));
    }
    write_method(&mut conn, START_OK, &start_ok(user, password)?)?;
    let Some(tune) = read_method(&mut conn)? else {
        return closed();
    };
    match (tune.class, tune.method) {
        (CONNECTION, TUNE) if tune.args.len() >= 8 => {}
        (CONNECTION, CLOSE) => return Ok(LoginOutcome::Refused(close_reason(&tune.args))),
        _ => return Err(malformed("something other than Connection.Tune")),
    }
    let channel_max = &tune.args[0..2];
    let frame_max = u32::from_be_bytes([tune.args[2], tune.args[3], tune.args[4], tune.args[5]]);
    let mut tune_ok = Vec::with_capacity(8);
    tune_ok.extend_from_slice(channel_max);
    let frame_max = if frame_max == 0 { 131_072 } else { frame_max };
    tune_ok.extend_from_slice(&frame_max.to_be_bytes());
    tune_ok.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
    write_method(&mut conn, TUNE_OK, &tune_ok)?;
    let mut open = Vec::new();
    short_str(&mut open, vhost)?;
    short_str(&mut open, "")?;
    open.push(0);
    write_method(&mut conn, OPEN, &open)?;
    let Some(reply) = read_method(&mut conn)? else {
        return closed();
    };
    match (reply.class, reply.method) {
        (CONNECTION, OPEN_OK) => {
            let mut close = Vec::new();
            close.extend_from_slice(&200u16.to_be_bytes());
            short_str(&mut close, "Goodbye")?;
            close.extend_from_slice(&[0, 0, 0, 0]);
            // The login is proven; a lost Close-Ok changes nothing.
            if write_method(&mut conn, CLOSE, &close).is_ok() {
                let _ = read_method(&mut conn);
            }
            Ok(LoginOutcome::Accepted)
        }
        (CONNECTION, CLOSE) => {
            let _ = write_method(&mut conn, CLOSE_OK, &[]);
            Ok(LoginOutcome::Refused(close_reason(&reply.args)))
        }
        _ => Err(malformed("something other than Connection.Open-Ok")),
    }
}

/// Reads and writes of the fuzzing harness: reads come from the bytes given, writes vanish.
struct Replay<'a>(&'a [u8]);

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fuzzing harness's view of the client: a login whose server sent `bytes`. Any bytes
/// give an outcome or an error.
pub(crate) fn login_over_bytes(bytes: &[u8]) -> std::io::Result<LoginOutcome> {
    login(
        Replay(bytes),
        "/",
        "celery",
        &SecretString::new("fuzz".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_ok_carries_plain_and_the_capability() {
        let args = start_ok("celery", &SecretString::new("pw".into())).unwrap();
        let table_len = u32::from_be_bytes([args[0], args[1], args[2], args[3]]) as usize;
        let rest = &args[4 + table_len..];
        assert_eq!(&rest[..6], b"\x05PLAIN");
        assert_eq!(&rest[6..10], &10u32.to_be_bytes());
        assert_eq!(&rest[10..20], b"\0celery\0pw");
        assert_eq!(&rest[20..], b"\x05en_US");
        assert!(
            args.windows(28)
                .any(|w| w == b"authentication_failure_close")
        );
    }

    #[test]
    fn mechanisms_and_close_reasons_are_read() {
        let mut start = vec![0, 9];
        long_bytes(&mut start, b"\x07product");
        long_bytes(&mut start, b"AMQPLAIN PLAIN");
        long_bytes(&mut start, b"en_US");
        assert!(offers_plain(&start));
        let mut start = vec![0, 9];
        long_bytes(&mut start, b"");
        long_bytes(&mut start, b"EXTERNAL");
        assert!(!offers_plain(&start));
        assert!(!offers_plain(&[0, 9, 0, 0, 0, 200]));
        let mut close = 403u16.to_be_bytes().to_vec();
        short_str(&mut close, "ACCESS_REFUSED - Login was refused").unwrap();
        assert_eq!(
            close_reason(&close),
            "403 ACCESS_REFUSED - Login was refused"
        );
    }

    #[test]
    fn the_seed_exchanges_read_as_the_server_meant_them() {
        let seed = |name: &str| {
            let path = format!(
                "{}/../fuzz/corpus/amqp_login/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            login_over_bytes(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        };
        for accepted in [
            "accepted",
            "accepted_after_heartbeats",
            "tune_frame_max_zero",
        ] {
            assert_eq!(
                seed(accepted).unwrap(),
                LoginOutcome::Accepted,
                "{accepted}"
            );
        }
        assert_eq!(
            seed("refused_password").unwrap(),
            LoginOutcome::Refused("403 ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".into())
        );
        assert_eq!(
            seed("refused_vhost").unwrap(),
            LoginOutcome::Refused(
                "530 NOT_ALLOWED - access to vhost '/' refused for user 'celery_b'".into()
            )
        );
        assert_eq!(
            seed("closed_after_start").unwrap(),
            LoginOutcome::Refused("the server closed the connection".into())
        );
        for (name, error) in [
            (
                "no_plain",
                "the AMQP server sent no PLAIN mechanism in Connection.Start",
            ),
            (
                "frame_too_large",
                "the AMQP server sent a frame larger than 1 MiB",
            ),
            (
                "frame_without_end",
                "the AMQP server sent a frame without its end byte",
            ),
        ] {
            assert_eq!(seed(name).unwrap_err().to_string(), error, "{name}");
        }
    }
}
