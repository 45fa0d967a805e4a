//! A small blocking RESP2 client: enough of the Redis protocol for AUTH, ACL and CONFIG
//! commands, with timeouts so an unreachable server fails a step instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
    reader: BufReader<TcpStream>,
}

impl Resp {
    /// Connects to `host:port` of a `redis://host:port` URL.
    pub fn connect(url: &str) -> std::io::Result<Self> {
        let rest = url.strip_prefix("redis://").unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let addr = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:6379")
        };
        let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&addr)?.collect();
        let first = addrs
            .first()
            .ok_or_else(|| std::io::Error::other(format!("{addr} does not resolve")))?;
        let stream = TcpStream::connect_timeout(first, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Resp {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let written = self.reader.get_mut().write_all(&out);
        zeroize::Zeroize::zeroize(&mut out); // it may hold a password (AUTH)
        written?;
        self.read()
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read(&mut self) -> std::io::Result<Reply> {
        let line = self.line()?;
        let bad = || std::io::Error::other("malformed reply");
        let (kind, rest) = line.split_at(line.len().min(1));
        Ok(match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad()),
        })
    }
}
