//! A small blocking RESP2 client: enough of the Redis protocol for AUTH, ACL and CONFIG
//! commands, with timeouts so an unreachable server fails a step instead of hanging it. The
//! server is not trusted: replies are parsed within fixed limits (line and bulk length, array
//! count, nesting depth, bytes per reply), so a broken or hostile server gets an error, never a
//! panic, an allocation it chose, or a stack overflow.
//!
//! `rediss://` URLs speak TLS (rustls), verifying the server's certificate and name against
//! the CA file named by the URL's `?ca=PATH`, or the system's CA certificates.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use super::socket::{self, Conn};

/// Longest bulk string accepted. Redis allows 512 MiB, but the replies keyd reads (OK, PONG,
/// CONFIG GET aclfile, ACL GETUSER) are a few hundred bytes: 1 MiB is plenty.
pub const MAX_BULK: usize = 1 << 20;
/// Longest line (simple string, error, integer, length) accepted, without its CRLF.
pub const MAX_LINE: usize = 64 << 10;
/// Most items in one array (ACL GETUSER answers about a dozen).
pub const MAX_ARRAY: usize = 1024;
/// Deepest nesting of arrays (ACL GETUSER nests two levels).
pub const MAX_DEPTH: usize = 8;
/// Most bytes one reply may take in all, so a server cannot make keyd read without end.
pub const MAX_REPLY_BYTES: u64 = 2 << 20; // 2 MiB

/// A reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR …` (Redis error text never contains the arguments of AUTH or ACL SETUSER).
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$…`, or nil.
    Bulk(Option<Vec<u8>>),
    /// `*…`, or nil.
    Array(Option<Vec<Reply>>),
}

/// A connection.
pub struct Resp {
    reader: BufReader<Conn>,
    timeout: Duration,
}

/// Where a `redis://` or `rediss://` URL points.
#[derive(Debug, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: TLS.
    pub tls: bool,
    /// The host, as written (IPv6 in brackets).
    pub host: String,
    /// The port (6379 when the URL names none).
    pub port: u16,
    /// The CA file (`?ca=PATH`), for TLS.
    pub ca: Option<std::path::PathBuf>,
}

impl RedisUrl {
    /// Parses `redis[s]://[user@]host[:port][/db][?ca=PATH]`.
    pub fn parse(url: &str) -> std::io::Result<RedisUrl> {
        let (tls, rest) = match (url.strip_prefix("rediss://"), url.strip_prefix("redis://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => (false, url),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = rest.split('/').next().unwrap_or(rest);
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse()
                    .map_err(|_| std::io::Error::other(format!("bad port {port:?}")))?,
            ),
            _ => (host_port, 6379),
        };
        let mut ca = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ca", path)) => ca = Some(super::percent_decode(path).into()),
                _ => {
                    return Err(std::io::Error::other(format!(
                        "unknown url parameter {pair:?} (expected ca=PATH)"
                    )));
                }
            }
        }
        Ok(RedisUrl {
            tls,
            host: host.to_owned(),
            port,
            ca,
        })
    }
}

impl Resp {
    /// Connects to `host:port` of a `redis://host:port` URL (name resolution, TCP connect and
    /// TLS handshake together) within `timeout`; each command
    /// then has `timeout` to be sent and answered. A timeout is an error of kind
    /// [`ErrorKind::TimedOut`].
    pub fn connect(url: &str, timeout: Duration) -> std::io::Result<Self> {
        let url = RedisUrl::parse(url)?;
        // Resolving, connecting and the TLS handshake together take at most `timeout`.
        let socket = socket::connect(&url.host, url.port, Instant::now() + timeout)?;
        let conn = if url.tls {
            let config =
                super::tls::client_config(super::tls::TlsMode::VerifyFull, url.ca.as_deref())
                    .map_err(std::io::Error::other)?;
            socket::start_tls(socket, config, &url.host)?
        } else {
            Conn::Plain(socket)
        };
        Ok(Resp {
            reader: BufReader::new(conn),
            timeout,
        })
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let out = encode_command(args);
        self.reader
            .get_mut()
            .set_deadline(Instant::now() + self.timeout);
        let written = self.reader.get_mut().write_all(&out);
        written.and_then(|()| self.reader.get_mut().flush())?;
        self.read()
    }

    fn read(&mut self) -> std::io::Result<Reply> {
        // The whole reply counts against one budget: a server cannot stream without end.
        let mut budget = (&mut self.reader).take(MAX_REPLY_BYTES);
        read_reply(&mut budget).map_err(|e| {
            if budget.limit() == 0 && e.kind() == ErrorKind::UnexpectedEof {
                malformed("a reply longer than 2 MiB")
            } else {
                e
            }
        })
    }
}

/// `args` as one RESP command, in a buffer sized for all of it before the first byte is
/// written: a buffer that grew would leave a copy of what it held so far (a password of AUTH
/// or ACL SETUSER) in the block it freed, where no zeroising reaches it.
fn encode_command(args: &[&[u8]]) -> zeroize::Zeroizing<Vec<u8>> {
    use std::io::Write as _;
    let decimal_len = |n: usize| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let len = 1
        + decimal_len(args.len())
        + 2
        + args
            .iter()
            .map(|a| 1 + decimal_len(a.len()) + 2 + a.len() + 2)
            .sum::<usize>();
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(len));
    // Writes into a Vec fail only on allocation failure, which aborts.
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    debug_assert_eq!(out.len(), len);
    out
}

fn malformed(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, format!("malformed reply: {what}"))
}

fn closed() -> std::io::Error {
    std::io::Error::new(ErrorKind::UnexpectedEof, "connection closed")
}

/// Reads one line ended by CRLF, of at most [`MAX_LINE`] bytes, and returns it without the CRLF.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Err(closed());
        }
        let (chunk, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..=at], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > MAX_LINE + 2 {
            return Err(malformed(format!("a line longer than {MAX_LINE} bytes")));
        }
        line.extend_from_slice(chunk);
        let used = chunk.len();
        reader.consume(used);
        if ended {
            break;
        }
    }
    if !line.ends_with(b"\r\n") {
        return Err(malformed("a line not ended by CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn integer(digits: &[u8]) -> std::io::Result<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            malformed(format!(
                "{:?} is not an integer",
                digits.escape_ascii().to_string()
            ))
        })
}

/// A length or count: `None` for -1 (nil), else a number up to `max`; `what(n)` names a
/// reply too large (`a bulk string of n bytes`) for the message.
fn length(
    digits: &[u8],
    max: usize,
    limit: &str,
    what: impl Fn(i64) -> String,
) -> std::io::Result<Option<usize>> {
    match integer(digits)? {
        -1 => Ok(None),
        n if n < 0 => Err(malformed(format!("{} (a negative length)", what(n)))),
        n if n as u64 > max as u64 => Err(malformed(format!("{} exceeds the {limit}", what(n)))),
        n => Ok(Some(n as usize)),
    }
}

/// Reads one reply, trusting nothing the server sends: lines, bulk strings, array counts and
/// nesting are bounded by the limits above, nothing is allocated from a count before the
/// bytes arrive, and any input gives a reply or an error, never a panic.
pub fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    read_nested(reader, 0)
}

fn read_nested(reader: &mut impl BufRead, depth: usize) -> std::io::Result<Reply> {
    let line = read_line(reader)?;
    let Some((&kind, rest)) = line.split_first() else {
        return Err(malformed("an empty line"));
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok(match kind {
        b'+' => Reply::Simple(text(rest)),
        b'-' => Reply::Error(text(rest)),
        b':' => Reply::Int(integer(rest)?),
        b'$' => {
            let Some(n) = length(rest, MAX_BULK, "1 MiB limit", |n| {
                format!("a bulk string of {n} bytes")
            })?
            else {
                return Ok(Reply::Bulk(None));
            };
            // Grows as bytes arrive, up to `n`: a short reply never costs `n` bytes of memory.
            let mut value = Vec::new();
            (&mut *reader).take(n as u64).read_to_end(&mut value)?;
            if value.len() < n {
                return Err(closed());
            }
            let mut end = [0u8; 2];
            reader.read_exact(&mut end).map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => closed(),
                _ => e,
            })?;
            if &end != b"\r\n" {
                return Err(malformed(format!(
                    "a bulk string of {n} bytes not followed by CRLF"
                )));
            }
            Reply::Bulk(Some(value))
        }
        b'*' => {
            let limit = format!("limit of {MAX_ARRAY} items");
            let Some(n) = length(rest, MAX_ARRAY, &limit, |n| {
                format!("an array of {n} items")
            })?
            else {
                return Ok(Reply::Array(None));
            };
            if depth >= MAX_DEPTH {
                return Err(malformed(format!(
                    "arrays nested deeper than {MAX_DEPTH} levels"
                )));
            }
            // Pushed one by one: the count is the server's word, the items are what it sent.
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(read_nested(reader, depth + 1)?);
            }
            Reply::Array(Some(items))
        }
        other => {
            return Err(malformed(format!(
                "unknown reply type {:?}",
                [other].escape_ascii().to_string()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> std::io::Result<Reply> {
        read_reply(&mut &bytes[..])
    }

    fn error_text(bytes: &[u8]) -> String {
        match parse(bytes) {
            Ok(reply) => panic!(
                "{:?} parsed as {:.80}",
                bytes[..bytes.len().min(80)].escape_ascii().to_string(),
                format!("{reply:?}")
            ),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_long_password_in_a_command_is_written_into_one_buffer_never_reallocated() {
        // A reallocation leaves a copy of what was written so far, unzeroised, in the freed
        // block: the buffer is sized for the whole command before any byte is written.
        for len in [1000, 70_000, 100, 40, 1] {
            let password = vec![b'p'; len];
            let out = encode_command(&[b"AUTH", b"app", &password]);
            assert_eq!(out.capacity(), out.len(), "a {len}-byte password");
        }
    }

    #[test]
    fn valid_replies_parse() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Reply::Error("ERR no".into())
        );
        assert_eq!(parse(b":-42\r\n").unwrap(), Reply::Int(-42));
        assert_eq!(
            parse(b"$5\r\nab\r\nc\r\n").unwrap(),
            Reply::Bulk(Some(b"ab\r\nc".to_vec()))
        );
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Reply::Bulk(Some(Vec::new())));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Array(None));
        assert_eq!(
            parse(b"*2\r\n$7\r\naclfile\r\n*1\r\n:1\r\n").unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"aclfile".to_vec())),
                Reply::Array(Some(vec![Reply::Int(1)])),
            ]))
        );
    }

    #[test]
    fn a_redis_reply_nested_a_hundred_thousand_deep_is_an_error_not_a_stack_overflow() {
        let deep = b"*1\r\n".repeat(100_000);
        assert!(
            error_text(&deep).contains("nested deeper than"),
            "{}",
            error_text(&deep)
        );
    }

    #[test]
    fn a_redis_bulk_length_of_ten_gigabytes_or_i64_max_is_refused_before_allocating() {
        for reply in [&b"$9999999999\r\n"[..], b"$9223372036854775807\r\n"] {
            let e = error_text(reply);
            assert!(e.contains("exceeds the 1 MiB limit"), "{e}");
        }
    }

    #[test]
    fn a_redis_array_count_of_two_billion_is_refused_before_allocating() {
        for reply in [&b"*2147483647\r\n"[..], b"*9223372036854775807\r\n"] {
            let e = error_text(reply);
            assert!(e.contains("exceeds the limit of"), "{e}");
        }
    }

    #[test]
    fn a_redis_reply_line_without_end_is_refused_at_the_line_limit() {
        let mut endless = b"+".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 10 << 20));
        let e = error_text(&endless);
        assert!(e.contains("longer than"), "{e}");
    }

    #[test]
    fn malformed_redis_replies_are_errors_that_say_what_was_wrong() {
        let cases: [(&[u8], &str); 14] = [
            (b"", "connection closed"),
            (b"\r\n", "an empty line"),
            (b"?what\r\n", "unknown reply type"),
            (b"+OK", "connection closed"),
            (b"+OK\n", "not ended by CRLF"),
            (b":12a\r\n", "not an integer"),
            (b":\r\n", "not an integer"),
            (b":99999999999999999999\r\n", "not an integer"),
            (b"$-2\r\n", "a bulk string of -2 bytes (a negative length)"),
            (b"*-7\r\n", "an array of -7 items (a negative length)"),
            (b"$x\r\n", "not an integer"),
            (b"$5\r\nab", "connection closed"),
            (b"$2\r\nabcd\r\n", "not followed by CRLF"),
            (b"*3\r\n:1\r\n", "connection closed"),
        ];
        for (reply, expected) in cases {
            let e = error_text(reply);
            assert!(
                e.contains(expected),
                "{}: {e} (expected {expected:?})",
                reply.escape_ascii()
            );
        }
    }

    /// xorshift64*: a small deterministic generator, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Parses `input` and fails the test, naming the input, if the parser panics.
    fn never_panics(input: &[u8]) {
        let parsed = std::panic::catch_unwind(|| parse(input));
        assert!(
            parsed.is_ok(),
            "the parser panicked on {:?}",
            input.escape_ascii().to_string()
        );
    }

    #[test]
    fn no_truncation_mutation_or_random_redis_reply_makes_the_parser_panic() {
        let valid: [&[u8]; 9] = [
            b"+OK\r\n",
            b"-WRONGPASS invalid username-password pair\r\n",
            b":1\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$7\r\naclfile\r\n$0\r\n\r\n",
            b"*3\r\n*1\r\n:-5\r\n$3\r\nab\n\r\n+PONG\r\n",
        ];
        // Every truncation of a valid reply is an error, never a panic (or a hang).
        for reply in valid {
            assert!(parse(reply).is_ok(), "{}", reply.escape_ascii());
            for end in 0..reply.len() {
                never_panics(&reply[..end]);
                assert!(parse(&reply[..end]).is_err(), "{}", reply.escape_ascii());
            }
        }
        // Mutations: one or a few bytes of a valid reply replaced by protocol-significant ones.
        let alphabet = b"+-:$*\r\n0123456789-?\x00\xff";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut input = valid[rng.below(valid.len())].to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(input.len());
                input[at] = alphabet[rng.below(alphabet.len())];
            }
            never_panics(&input);
        }
        // Random sequences of protocol pieces and random bytes.
        let pieces: [&[u8]; 12] = [
            b"*",
            b"$",
            b":",
            b"+",
            b"-",
            b"\r\n",
            b"1",
            b"-1",
            b"99999999999",
            b"2",
            b"x",
            b"\n",
        ];
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(40) {
                if rng.below(4) == 0 {
                    input.push(rng.next() as u8);
                } else {
                    input.extend_from_slice(pieces[rng.below(pieces.len())]);
                }
            }
            never_panics(&input);
        }
    }
}
