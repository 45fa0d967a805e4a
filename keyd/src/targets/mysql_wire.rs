//! A small blocking client of the MySQL protocol (MySQL 5.7+, MariaDB 10.2+): the v10 greeting,
//! the SSL request and TLS (rustls) before the login, `mysql_native_password` logins (and the
//! server's switch to it), `COM_QUERY` with its OK, ERR and text result set answers. Enough for
//! `CREATE USER`, `ALTER USER`, `SHOW GRANTS` and a test login; nothing else is spoken.
//!
//! The server is not trusted: packets are read within fixed limits (1 MiB a packet, 2 MiB and
//! 4096 rows a result), sequence numbers are checked, and a request keyd never makes (a local
//! file, an authentication plugin other than `mysql_native_password`) is refused, so a broken or
//! hostile server gets an error, never a panic, an allocation it chose, or a password.
//! `mysql_native_password` sends a proof bound to the server's nonce, never the password.
//!
//! Every read and write is bounded by the session's deadline (see [`super::socket`]): the
//! connection, TLS and the login together take at most the timeout, and so does each statement
//! and its answer.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use super::socket::{self, Conn};
use crate::secret::SecretString;

/// Longest packet accepted (the protocol allows 16 MiB): greetings, OK and ERR packets and the
/// rows keyd reads (`SHOW GRANTS`, `SELECT 1`) are a few hundred bytes.
pub const MAX_PACKET: usize = 1 << 20;
/// Most bytes one answer (a result set's packets together) may take.
pub const MAX_ANSWER_BYTES: usize = 2 << 20;
/// Most rows of one result set.
pub const MAX_ROWS: usize = 4096;
/// Most columns of one result set.
pub const MAX_COLUMNS: usize = 64;

/// The authentication plugin keyd speaks.
const NATIVE: &str = "mysql_native_password";
/// utf8mb4_general_ci, known to MySQL 5.5.3+ and MariaDB.
const UTF8MB4: u8 = 45;

/// Capability flags (the protocol's `CLIENT_*`).
const LONG_PASSWORD: u32 = 1;
const PROTOCOL_41: u32 = 0x200;
const SSL: u32 = 0x800;
const TRANSACTIONS: u32 = 0x2000;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 0x8_0000;

/// An ERR packet: the server refused a login or a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The error number (e.g. 1045, access denied).
    pub code: u16,
    /// The SQLSTATE, when the server sent one.
    pub state: String,
    /// The server's message (which may quote the statement: callers scrub it).
    pub message: String,
}

/// Why a call failed.
#[derive(Debug)]
pub enum WireError {
    /// The socket failed or timed out ([`ErrorKind::TimedOut`]).
    Io(std::io::Error),
    /// The server answered with an ERR packet.
    Server(ServerError),
    /// The server's bytes broke the protocol or keyd's limits.
    Malformed(String),
    /// The server asked for something keyd does not do (a local file, no TLS).
    Refused(String),
    /// The account uses an authentication plugin other than `mysql_native_password`.
    Plugin(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        WireError::Io(e)
    }
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// What the server's greeting says.
#[derive(Debug, PartialEq, Eq)]
pub struct Greeting {
    /// `8.0.36`, `10.11.6-MariaDB-…`.
    pub server_version: String,
    /// The server's capability flags.
    pub capabilities: u32,
    /// The nonce the login proof is bound to (20 bytes).
    pub nonce: Vec<u8>,
    /// The server's default authentication plugin.
    pub plugin: String,
}

/// A cursor over one packet's payload; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(malformed("a packet shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string ended by NUL (or by the end of the packet).
    fn nul_str(&mut self) -> &'a [u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        let s = &self.0[..end];
        self.0 = &self.0[(end + 1).min(self.0.len())..];
        s
    }

    /// A length-encoded integer; `None` for 0xFB, NULL in a row.
    fn lenenc(&mut self) -> Result<Option<u64>, WireError> {
        let first = self.byte()?;
        let n = match first {
            0..=0xfa => return Ok(Some(u64::from(first))),
            0xfb => return Ok(None),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            0xff => return Err(malformed("a length-encoded integer starting 0xff")),
        };
        let mut bytes = [0u8; 8];
        bytes[..n].copy_from_slice(self.take(n)?);
        Ok(Some(u64::from_le_bytes(bytes)))
    }

    /// A length-encoded string; `None` for NULL.
    fn lenenc_str(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        match self.lenenc()? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| malformed("a string too long"))?;
                self.take(n).map(Some)
            }
        }
    }
}

/// Parses the server's first packet: an ERR packet (too many connections, a blocked host) or
/// a v10 greeting.
pub fn parse_greeting(payload: &[u8]) -> Result<Greeting, WireError> {
    if payload.first() == Some(&0xff) {
        return Err(WireError::Server(parse_error(payload)?));
    }
    let mut c = Cursor(payload);
    let version = c.byte()?;
    if version != 10 {
        return Err(malformed(format!(
            "a greeting of protocol version {version} (expected 10)"
        )));
    }
    let server_version = String::from_utf8_lossy(c.nul_str()).into_owned();
    let _thread = c.u32()?;
    let mut nonce = c.take(8)?.to_vec();
    let _filler = c.byte()?;
    let mut capabilities = u32::from(c.u16()?);
    let mut plugin = String::new();
    if !c.0.is_empty() {
        let _charset = c.byte()?;
        let _status = c.u16()?;
        capabilities |= u32::from(c.u16()?) << 16;
        let data_len = usize::from(c.byte()?);
        let _reserved = c.take(10)?;
        if capabilities & SECURE_CONNECTION != 0 {
            let rest = data_len.saturating_sub(8).max(13);
            let part = c.take(rest)?;
            // The second part ends with a NUL that is not part of the nonce.
            nonce.extend_from_slice(part.strip_suffix(&[0]).unwrap_or(part));
        }
        if capabilities & PLUGIN_AUTH != 0 {
            plugin = String::from_utf8_lossy(c.nul_str()).into_owned();
        }
    }
    if capabilities & PROTOCOL_41 == 0 || capabilities & SECURE_CONNECTION == 0 {
        return Err(WireError::Refused(
            "the server does not speak protocol 4.1 with secure connections (MySQL 4.1+)".into(),
        ));
    }
    if nonce.len() != 20 {
        return Err(malformed(format!(
            "a greeting nonce of {} bytes (expected 20)",
            nonce.len()
        )));
    }
    Ok(Greeting {
        server_version,
        capabilities,
        nonce,
        plugin,
    })
}

/// Parses an ERR packet (`0xff`, code, optional `#` and SQLSTATE, message).
fn parse_error(payload: &[u8]) -> Result<ServerError, WireError> {
    let mut c = Cursor(payload);
    let _marker = c.byte()?;
    let code = c.u16()?;
    let state = if c.0.first() == Some(&b'#') {
        let s = c.take(6)?;
        String::from_utf8_lossy(&s[1..]).into_owned()
    } else {
        String::new()
    };
    Ok(ServerError {
        code,
        state,
        message: String::from_utf8_lossy(c.0).into_owned(),
    })
}

fn sha1(parts: &[&[u8]]) -> Zeroizing<[u8; 20]> {
    let mut context = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    for part in parts {
        context.update(part);
    }
    let mut out = Zeroizing::new([0u8; 20]);
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The `mysql_native_password` proof of `password` for `nonce`:
/// `SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))`; empty for an empty password.
pub fn native_proof(password: &[u8], nonce: &[u8]) -> Zeroizing<Vec<u8>> {
    if password.is_empty() {
        return Zeroizing::new(Vec::new());
    }
    let stage1 = sha1(&[password]);
    let stage2 = sha1(&[&stage1[..]]);
    let mask = sha1(&[nonce, &stage2[..]]);
    Zeroizing::new(stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect())
}

/// The `mysql_native_password` hash the server stores for `password`, as
/// `IDENTIFIED … AS` takes it: `*` and the uppercase hex of `SHA1(SHA1(password))`.
pub fn native_hash(password: &SecretString) -> Zeroizing<String> {
    let stage1 = sha1(&[password.expose_secret().as_bytes()]);
    let stage2 = sha1(&[&stage1[..]]);
    let mut hex = Zeroizing::new([0u8; 40]);
    crate::secret::hex_into(&stage2[..], &mut hex[..]);
    let mut out = Zeroizing::new(String::with_capacity(41));
    out.push('*');
    out.push_str(
        &std::str::from_utf8(&hex[..])
            .expect("hex digits")
            .to_ascii_uppercase(),
    );
    out
}

/// Who logs in, and how.
pub struct Login<'a> {
    /// The account's user name.
    pub user: &'a str,
    /// Its password.
    pub password: &'a SecretString,
    /// TLS to start before the login (its configuration), or none.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One logged-in connection. Dropping it closes the socket.
pub struct Session {
    conn: Conn,
    seq: u8,
    timeout: Duration,
}

impl Session {
    /// Connects to `host:port` and logs in as `login` says, all within `timeout`.
    pub fn open(
        host: &str,
        port: u16,
        timeout: Duration,
        login: &Login<'_>,
    ) -> Result<Session, WireError> {
        let mut socket = socket::connect(host, port, Instant::now() + timeout)?;
        let mut seq = 0;
        let greeting = parse_greeting(&read_packet(&mut socket, &mut seq)?)?;
        let mut capabilities = LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION;
        capabilities |= greeting.capabilities & PLUGIN_AUTH;
        let conn = match &login.tls {
            None => Conn::Plain(socket),
            Some(config) => {
                if greeting.capabilities & SSL == 0 {
                    return Err(WireError::Refused(
                        "the server does not offer TLS (give it a certificate, or set ssl-mode=DISABLED in the url)"
                            .into(),
                    ));
                }
                capabilities |= SSL;
                write_packet(&mut socket, &mut seq, &ssl_request(capabilities))?;
                socket::start_tls(socket, config.clone(), host)?
            }
        };
        let mut session = Session { conn, seq, timeout };
        let proof = native_proof(login.password.expose_secret().as_bytes(), &greeting.nonce);
        session.write_packet(&handshake_response(capabilities, login.user, &proof))?;
        session.finish_login(login.password)?;
        Ok(session)
    }

    /// Reads the answers to the login until OK, answering one switch to
    /// `mysql_native_password` with a new nonce.
    fn finish_login(&mut self, password: &SecretString) -> Result<(), WireError> {
        let mut switched = false;
        loop {
            let packet = self.read_packet()?;
            match packet.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(WireError::Server(parse_error(&packet)?)),
                Some(0xfe) if !switched => {
                    let mut c = Cursor(&packet[1..]);
                    let plugin = String::from_utf8_lossy(c.nul_str()).into_owned();
                    if plugin != NATIVE {
                        return Err(refused_plugin(&plugin));
                    }
                    let nonce = c.0.strip_suffix(&[0]).unwrap_or(c.0);
                    if nonce.len() != 20 {
                        return Err(malformed(
                            "an authentication switch without a 20-byte nonce",
                        ));
                    }
                    switched = true;
                    let proof = native_proof(password.expose_secret().as_bytes(), nonce);
                    self.write_packet(&proof)?;
                }
                // More data for the plugin (caching_sha2_password's fast path and full
                // authentication): not what keyd asked for.
                Some(0x01) => return Err(refused_plugin("caching_sha2_password")),
                _ => return Err(malformed("an unexpected answer to the login")),
            }
        }
    }

    /// Runs one statement that returns no rows (e.g. `ALTER USER`).
    pub fn execute(&mut self, sql: &str) -> Result<(), WireError> {
        self.send_query(sql)?;
        match read_answer(&mut self.conn, &mut self.seq)? {
            None => Ok(()),
            Some(_) => Err(malformed("rows in answer to a statement that returns none")),
        }
    }

    /// Runs one query and returns its rows (text protocol; NULL as `None`).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>, WireError> {
        self.send_query(sql)?;
        Ok(read_answer(&mut self.conn, &mut self.seq)?.unwrap_or_default())
    }

    /// `COM_QUERY` with `sql`, in a buffer sized before the first byte is written (the
    /// statement may hold a password hash: no reallocation leaves a copy behind).
    fn send_query(&mut self, sql: &str) -> Result<(), WireError> {
        self.conn.set_deadline(Instant::now() + self.timeout);
        self.seq = 0;
        let mut payload = Zeroizing::new(Vec::with_capacity(1 + sql.len()));
        payload.push(0x03);
        payload.extend_from_slice(sql.as_bytes());
        self.write_packet(&payload)
    }

    fn read_packet(&mut self) -> Result<Zeroizing<Vec<u8>>, WireError> {
        read_packet(&mut self.conn, &mut self.seq)
    }

    fn write_packet(&mut self, payload: &[u8]) -> Result<(), WireError> {
        write_packet(&mut self.conn, &mut self.seq, payload)
    }
}

impl Drop for Session {
    /// Says goodbye (`COM_QUIT`), so the server counts a closed session rather than an aborted
    /// one; best effort, within a second.
    fn drop(&mut self) {
        let wait = self.timeout.min(Duration::from_secs(1));
        self.conn.set_deadline(Instant::now() + wait);
        self.seq = 0;
        let _ = self.write_packet(&[0x01]);
        if let Conn::Tls(tls) = &mut self.conn {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

/// One row of a text result set (NULL as `None`), zeroised when dropped: `SHOW GRANTS` rows
/// of MariaDB carry the account's password hash.
pub type Row = Vec<Option<Zeroizing<String>>>;

/// Reads the answer to a `COM_QUERY`: `None` for OK, the rows of a result set, or the error.
fn read_answer(reader: &mut impl Read, seq: &mut u8) -> Result<Option<Vec<Row>>, WireError> {
    let first = read_packet(reader, seq)?;
    match first.first() {
        Some(0x00) => Ok(None),
        Some(0xff) => Err(WireError::Server(parse_error(&first)?)),
        Some(0xfb) => Err(WireError::Refused(
            "the server asked for a local file; keyd sends none".into(),
        )),
        _ => read_rows(reader, seq, &first).map(Some),
    }
}

/// Reads a text result set whose first packet (the column count) is `first`.
fn read_rows(reader: &mut impl Read, seq: &mut u8, first: &[u8]) -> Result<Vec<Row>, WireError> {
    let mut budget = MAX_ANSWER_BYTES.saturating_sub(first.len());
    let columns = Cursor(first)
        .lenenc()?
        .ok_or_else(|| malformed("a NULL column count"))?;
    let columns = usize::try_from(columns)
        .ok()
        .filter(|&n| (1..=MAX_COLUMNS).contains(&n))
        .ok_or_else(|| {
            malformed(format!(
                "a result of {columns} columns (expected 1 to {MAX_COLUMNS})"
            ))
        })?;
    let mut next = || -> Result<Zeroizing<Vec<u8>>, WireError> {
        let packet = read_packet(reader, seq)?;
        budget = budget
            .checked_sub(packet.len())
            .ok_or_else(|| malformed("an answer longer than 2 MiB"))?;
        Ok(packet)
    };
    for _ in 0..columns {
        next()?; // column definitions: the names are not needed
    }
    if !is_eof(&next()?) {
        return Err(malformed("no EOF after the column definitions"));
    }
    let mut rows = Vec::new();
    loop {
        let packet = next()?;
        if is_eof(&packet) {
            return Ok(rows);
        }
        if packet.first() == Some(&0xff) {
            return Err(WireError::Server(parse_error(&packet)?));
        }
        if rows.len() == MAX_ROWS {
            return Err(malformed(format!("a result of more than {MAX_ROWS} rows")));
        }
        let mut c = Cursor(&packet);
        let row = (0..columns)
            .map(|_| {
                c.lenenc_str()
                    .map(|v| v.map(|v| Zeroizing::new(String::from_utf8_lossy(v).into_owned())))
            })
            .collect::<Result<Row, _>>()?;
        if !c.0.is_empty() {
            return Err(malformed("a row longer than its columns"));
        }
        rows.push(row);
    }
}

/// Reads one packet: its length (at most [`MAX_PACKET`]) and the sequence number expected.
fn read_packet(reader: &mut impl Read, seq: &mut u8) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).map_err(closed)?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len > MAX_PACKET {
        return Err(malformed(format!(
            "a packet of {len} bytes exceeds the 1 MiB limit"
        )));
    }
    if header[3] != *seq {
        return Err(malformed(format!(
            "packet number {} where {} was expected",
            header[3], *seq
        )));
    }
    *seq = seq.wrapping_add(1);
    let mut payload = Zeroizing::new(vec![0u8; len]);
    reader.read_exact(&mut payload).map_err(closed)?;
    Ok(payload)
}

/// Writes one packet (payloads keyd sends are far below 16 MiB) in one buffer.
fn write_packet(writer: &mut impl Write, seq: &mut u8, payload: &[u8]) -> Result<(), WireError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n < 0xff_ffff)
        .ok_or_else(|| WireError::Refused("a statement longer than 16 MiB".into()))?;
    let mut packet = Zeroizing::new(Vec::with_capacity(4 + payload.len()));
    packet.extend_from_slice(&len.to_le_bytes()[..3]);
    packet.push(*seq);
    packet.extend_from_slice(payload);
    *seq = seq.wrapping_add(1);
    writer.write_all(&packet)?;
    writer.flush()?;
    Ok(())
}

/// The fuzzing harness's view of the parsers: `bytes` as a server's greeting packet followed
/// by its answer to a query. Any bytes give a greeting, rows within the limits, or an error.
pub fn parse_server_bytes(mut bytes: &[u8]) -> Result<Vec<Row>, WireError> {
    let mut seq = 0;
    parse_greeting(&read_packet(&mut bytes, &mut seq)?)?;
    // The answer to a query follows the client's packet 0.
    seq = 1;
    Ok(read_answer(&mut bytes, &mut seq)?.unwrap_or_default())
}

/// An EOF packet (`0xfe` and fewer than 9 bytes; a longer one starting 0xfe is a row).
fn is_eof(packet: &[u8]) -> bool {
    packet.first() == Some(&0xfe) && packet.len() < 9
}

/// A socket's end of input in the middle of a packet reads as the server closing.
fn closed(e: std::io::Error) -> WireError {
    if e.kind() == ErrorKind::UnexpectedEof {
        WireError::Io(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ))
    } else {
        WireError::Io(e)
    }
}

fn refused_plugin(plugin: &str) -> WireError {
    WireError::Plugin(format!(
        "the account uses the authentication plugin {plugin:?}; keyd logs in with {NATIVE} only (ALTER USER … IDENTIFIED WITH {NATIVE})"
    ))
}

/// The SSL request: the first 32 bytes of a handshake response, asking for TLS.
fn ssl_request(capabilities: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&capabilities.to_le_bytes());
    out.extend_from_slice(&(MAX_PACKET as u32).to_le_bytes());
    out.push(UTF8MB4);
    out.extend_from_slice(&[0; 23]);
    out
}

/// The handshake response (protocol 4.1) with a `mysql_native_password` proof.
fn handshake_response(capabilities: u32, user: &str, proof: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(32 + user.len() + 2 + proof.len() + 32));
    out.extend_from_slice(&ssl_request(capabilities));
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    // A proof is 20 bytes, or none for an empty password: its length fits in one byte.
    out.push(proof.len() as u8);
    out.extend_from_slice(proof);
    if capabilities & PLUGIN_AUTH != 0 {
        out.extend_from_slice(NATIVE.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_hash_is_sha1_of_sha1_in_uppercase_hex() {
        // As `printf secret1 | openssl sha1 -binary | openssl sha1` and MariaDB's PASSWORD().
        let hash = native_hash(&SecretString::new("secret1".into()));
        assert_eq!(&hash[..], "*7C67218EF7410F248763DC99AEDC705367393C4A");
    }

    #[test]
    fn the_native_proof_xors_out_to_the_stored_hash() {
        // The server's check: SHA1(proof XOR SHA1(nonce + stage2)) == stage2.
        let nonce = [7u8; 20];
        let proof = native_proof(b"secret1", &nonce);
        let stage2 = sha1(&[&sha1(&[b"secret1"])[..]]);
        let mask = sha1(&[&nonce, &stage2[..]]);
        let stage1: Vec<u8> = proof.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(sha1(&[&stage1]), stage2);
        assert!(native_proof(b"", &nonce).is_empty());
    }

    /// The greeting of a MariaDB 10.11 server without TLS (its first packet's payload, as
    /// captured on the wire).
    fn mariadb_greeting() -> Vec<u8> {
        const HEX: &str = "0a352e352e352d31302e31312e31392d4d6172696144422d302b646562313275312d6c6f670013000000592c6d61227e786100fef7080200ff81150000000000001d0000005d3073777a7e2e632a46633f006d7973716c5f6e61746976655f70617373776f726400";
        (0..HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&HEX[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_greeting_parses_into_its_version_nonce_and_plugin() {
        let g = parse_greeting(&mariadb_greeting()).unwrap();
        assert_eq!(g.server_version, "5.5.5-10.11.19-MariaDB-0+deb12u1-log");
        assert_eq!(g.nonce, b"Y,ma\"~xa]0swz~.c*Fc?");
        assert_eq!(g.plugin, NATIVE);
        assert!(g.capabilities & PLUGIN_AUTH != 0);
        assert_eq!(g.capabilities & SSL, 0, "this server has no certificate");
    }

    #[test]
    fn truncated_greetings_and_error_packets_are_errors_not_panics() {
        let greeting = mariadb_greeting();
        for len in 0..greeting.len() - 22 {
            assert!(parse_greeting(&greeting[..len]).is_err(), "{len} bytes");
        }
        let e = parse_greeting(b"\xff\x10\x04Too many connections").unwrap_err();
        assert!(
            matches!(&e, WireError::Server(s) if s.code == 1040 && s.message == "Too many connections"),
            "{e:?}"
        );
        let e = parse_greeting(b"\x09rest").unwrap_err();
        assert!(matches!(e, WireError::Malformed(m) if m.contains("version 9")));
    }

    #[test]
    fn a_handshake_response_carries_the_proof_and_never_the_password() {
        let proof = native_proof(b"hunter2-password", &[1; 20]);
        let out = handshake_response(PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH, "app", &proof);
        assert_eq!(&out[32..36], b"app\0");
        assert_eq!(out[36], 20);
        assert!(out.ends_with(b"mysql_native_password\0"));
        assert!(!out.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn length_encoded_integers_and_strings_are_bounds_checked() {
        assert_eq!(Cursor(b"\xfc\x01\x02").lenenc().unwrap(), Some(0x0201));
        assert_eq!(Cursor(b"\xfb").lenenc().unwrap(), None);
        assert!(Cursor(b"\xff").lenenc().is_err());
        assert!(Cursor(b"\xfe\x01").lenenc().is_err());
        // A string claiming 2^64-1 bytes is an error before anything is allocated.
        let mut huge = vec![0xfe];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Cursor(&huge).lenenc_str().is_err());
        assert_eq!(Cursor(b"\x03abc").lenenc_str().unwrap(), Some(&b"abc"[..]));
    }

    #[test]
    fn answers_captured_from_mariadb_parse_into_rows_or_errors() {
        let seed = |name: &str| {
            let path = format!(
                "{}/../fuzz/corpus/mysql_answer/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let rows = parse_server_bytes(&seed("select_one")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][0].as_deref().map(String::as_str), Some("1"));
        let grants = parse_server_bytes(&seed("show_grants")).unwrap();
        let lines: Vec<&str> = grants
            .iter()
            .map(|r| r[0].as_deref().unwrap().as_str())
            .collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "GRANT `r1` TO `a2`@`%` WITH ADMIN OPTION");
        assert!(lines[1].starts_with("GRANT USAGE ON *.* TO `a2`@`%` IDENTIFIED BY PASSWORD '*"));
        assert!(
            parse_server_bytes(&seed("alter_user_ok"))
                .unwrap()
                .is_empty()
        );
        let Err(WireError::Server(e)) = parse_server_bytes(&seed("no_such_grant")) else {
            panic!("no ERR packet");
        };
        assert_eq!((e.code, e.state.as_str()), (1141, "42000"));
    }

    #[test]
    fn a_packet_header_of_sixteen_mebibytes_is_refused_before_reading_it() {
        let mut seq = 0;
        let e = read_packet(&mut &b"\xff\xff\xff\x00rest"[..], &mut seq).unwrap_err();
        assert!(
            matches!(&e, WireError::Malformed(m) if m == "a packet of 16777215 bytes exceeds the 1 MiB limit"),
            "{e:?}"
        );
        let e = read_packet(&mut &b"\x01\x00\x00\x05x"[..], &mut seq).unwrap_err();
        assert!(
            matches!(&e, WireError::Malformed(m) if m == "packet number 5 where 0 was expected"),
            "{e:?}"
        );
    }
}
