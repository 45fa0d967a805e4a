//! keyd's one HTTP/1.1 server (hyper) for its sockets: the API socket and the Docker plugin
//! socket (Unix sockets, each with its own router ([`Routes`]) and peer rule ([`PeerRule`])),
//! and the metrics listener (TCP, `keyd --metrics`).
//!
//! What a peer can make the daemon do is bounded before any route runs:
//!
//! - On a Unix socket the peer's uid (SO_PEERCRED) is read on accept, before a byte is parsed.
//!   A peer the socket's rule does not allow is served by no router at all: its one request
//!   head is read (bounded, as below) only to log what was refused, its body is never read,
//!   and it gets a 403 and the connection is closed. A TCP peer has no uid: every TCP peer is
//!   served, so a TCP listener serves only routes anyone who can reach its address may read
//!   (the metrics, which hold no value), and which address that is is the operator's choice.
//! - A request head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers (hyper answers
//!   431 and closes beyond that), and must arrive within [`HEADER_TIMEOUT`]; the same timer
//!   runs while a kept-alive connection waits for its next request, so it is also the idle
//!   timeout. A body is at most [`MAX_BODY`] bytes (413), and must arrive within
//!   [`HEADER_TIMEOUT`] of its head (else 408, and the connection is closed).
//! - Each socket keeps at most [`MAX_CONNECTIONS`] connections. When a new one arrives at the
//!   limit, the oldest idle one (no request being answered) is closed to make room, so idle or
//!   slow clients can never starve a health check. A request is being answered only once its
//!   body is in: a client that sends a head and holds back the body leaves its connection idle. When every kept connection is answering a
//!   request, up to [`MAX_OVERFLOW`] more are served one request each, and only the socket's
//!   cheap routes (health, plugin activation), others get 503; beyond that a connection is
//!   closed as soon as it is accepted. Peers the rule does not allow are not kept: at most
//!   [`MAX_OVERFLOW`] are being refused at a time, further ones are closed unanswered.
//!   Accepting never waits, so shutdown is never stuck behind a full table.
//! - On shutdown every connection is told to finish the request it is answering and close;
//!   whatever is still open after [`SHUTDOWN_GRACE`] is dropped.
//!
//! Answers up to [`CHUNK`] bytes go out with a `Content-Length`; longer ones are sent in
//! `CHUNK`-sized chunks (`Transfer-Encoding: chunked`), as the Engine and Go servers do.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot, watch};

/// Largest request head accepted (hyper's read buffer; hyper's minimum is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 32;
/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Time allowed for a whole request head, for its body, and for an idle kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections kept per socket.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served beyond the limit, one cheap request each, while all kept ones are busy.
pub const MAX_OVERFLOW: usize = 16;
/// How long connections may take to finish their request once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Answers longer than this are sent chunked, in pieces of this size.
pub const CHUNK: usize = 16 * 1024;

/// A request as a router sees it: its body already read, within [`MAX_BODY`].
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
}

/// A response: status, content type and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body (a zeroizing owner when it holds a value: `Bytes::from_owner`).
    pub body: Bytes,
}

impl Response {
    /// 200 with a JSON value.
    pub fn json(value: &impl serde::Serialize) -> Self {
        Self::bytes(
            200,
            serde_json::to_vec(value).expect("API values serialise"),
        )
    }

    /// `status` with a JSON body already serialised.
    pub fn bytes(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: Bytes::from(body),
        }
    }

    /// An error with a message (`{"error": "..."}`); messages never carry values.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::bytes(
            status,
            serde_json::to_vec(&crate::wire::ErrorAnswer {
                error: message.into(),
            })
            .expect("serialises"),
        )
    }
}

/// What one socket serves. Implementors answer every request they are given (an unknown
/// route is a 404 of theirs) and never put a secret value in a log or an error message.
pub trait Routes: Send + Sync + 'static {
    /// Answers `request` from `peer`, which the socket's rule allowed.
    fn answer(&self, request: Request, peer: Peer) -> impl Future<Output = Response> + Send;

    /// Whether a request costs so little (no store operation, no wait) that it is answered
    /// even when every kept connection is busy: health checks, plugin activation.
    fn is_cheap(&self, method: &str, path: &str) -> bool;
}

/// Who may use a socket: a list of uids, checked on accept with SO_PEERCRED.
#[derive(Clone, Debug)]
pub struct PeerRule {
    allowed: Vec<u32>,
    /// Named in a refusal: the option that allows another uid (`--allow-uid`).
    option: &'static str,
}

impl PeerRule {
    /// A rule allowing exactly `allowed`; `option` is the flag that extends it.
    pub fn new(allowed: Vec<u32>, option: &'static str) -> Self {
        Self { allowed, option }
    }

    /// Whether `uid` may use the socket.
    pub fn allows(&self, uid: u32) -> bool {
        self.allowed.contains(&uid)
    }
}

/// Who sent a request: a Unix socket's peer by its uid, a TCP peer by its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A Unix socket's peer (SO_PEERCRED), allowed by the socket's [`PeerRule`].
    Uid(u32),
    /// A TCP peer: no credentials exist, so no rule is checked.
    Address(std::net::SocketAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Uid(uid) => write!(f, "uid {uid}"),
            Peer::Address(address) => write!(f, "{address}"),
        }
    }
}

/// What a socket listens on.
pub enum Listen {
    /// A Unix socket, and who may connect to it.
    Unix(UnixListener, PeerRule),
    /// A TCP listener: every peer that reaches it is served (there is no uid to check).
    Tcp(TcpListener),
}

/// A connection just accepted.
enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
}

impl Listen {
    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listen::Unix(listener, _) => listener.accept().await.map(|(s, _)| Accepted::Unix(s)),
            Listen::Tcp(listener) => listener
                .accept()
                .await
                .map(|(s, address)| Accepted::Tcp(s, address)),
        }
    }
}

/// One socket: what listens (and who may connect), what it serves.
pub struct Socket<R> {
    /// The bound listener.
    pub listen: Listen,
    /// What it serves.
    pub routes: Arc<R>,
}

/// How a connection is served, decided on accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// An allowed peer, kept alive.
    Serve,
    /// An allowed peer beyond the limit while every kept connection is busy: one request,
    /// cheap routes only.
    Overflow,
    /// A peer the rule does not allow: one request, refused.
    Refuse,
}

/// The connections a socket keeps, oldest first, each with its count of requests being
/// answered and the means to close it.
struct Table {
    next: u64,
    kept: BTreeMap<u64, Kept>,
}

struct Kept {
    busy: Arc<AtomicUsize>,
    _close: oneshot::Sender<()>,
}

/// Where a new connection goes.
enum Admission {
    Kept(u64, Arc<AtomicUsize>, oneshot::Receiver<()>),
    Overflow,
    Closed,
}

struct Connections {
    table: Mutex<Table>,
    overflow: AtomicUsize,
    refused: AtomicUsize,
}

impl Connections {
    fn new() -> Self {
        Self {
            table: Mutex::new(Table {
                next: 0,
                kept: BTreeMap::new(),
            }),
            overflow: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    /// Counts a connection from a peer the rule does not allow; false when [`MAX_OVERFLOW`]
    /// are already being refused (the new one is closed at once, unanswered).
    fn refuse(&self) -> bool {
        if self.refused.fetch_add(1, Ordering::SeqCst) < MAX_OVERFLOW {
            true
        } else {
            self.refused.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }

    /// Admits a new connection, closing the oldest idle one when the table is full.
    fn admit(&self) -> Admission {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.kept.len() >= MAX_CONNECTIONS {
            let idle = table
                .kept
                .iter()
                .find(|(_, k)| k.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, _)| *id);
            match idle {
                // Dropping its sender closes it (its task is waiting on the receiver).
                Some(id) => drop(table.kept.remove(&id)),
                None => {
                    return if self.overflow.fetch_add(1, Ordering::SeqCst) < MAX_OVERFLOW {
                        Admission::Overflow
                    } else {
                        self.overflow.fetch_sub(1, Ordering::SeqCst);
                        Admission::Closed
                    };
                }
            }
        }
        let id = table.next;
        table.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let (close, closed) = oneshot::channel();
        table.kept.insert(
            id,
            Kept {
                busy: busy.clone(),
                _close: close,
            },
        );
        Admission::Kept(id, busy, closed)
    }

    fn forget(&self, id: u64) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.kept.remove(&id);
    }
}

/// Serves `socket` until `shutdown` turns true, then lets its connections finish (at most
/// [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve<R: Routes>(socket: Socket<R>, mut shutdown: watch::Receiver<bool>) {
    let connections = Arc::new(Connections::new());
    // Every connection task holds a clone; `recv` returns None once the last one is gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let rule = match &socket.listen {
        Listen::Unix(_, rule) => Some(rule),
        Listen::Tcp(_) => None,
    };
    loop {
        let accepted = tokio::select! {
            accepted = socket.listen.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    crate::log::error(format_args!("accept failed: {e}"));
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        // The peer, and on a Unix socket its uid, before anything it sent is read.
        let (peer, allowed) = match &accepted {
            Accepted::Unix(stream) => {
                let Ok(uid) = stream.peer_cred().map(|c| c.uid()) else {
                    continue;
                };
                (Peer::Uid(uid), rule.is_some_and(|r| r.allows(uid)))
            }
            Accepted::Tcp(stream, address) => {
                // Small answers go out at once, not behind Nagle's wait for more.
                let _ = stream.set_nodelay(true);
                (Peer::Address(*address), true)
            }
        };
        let (mode, kept) = if !allowed {
            if !connections.refuse() {
                continue;
            }
            (Mode::Refuse, None)
        } else {
            match connections.admit() {
                Admission::Kept(id, busy, closed) => (Mode::Serve, Some((id, busy, closed))),
                Admission::Overflow => (Mode::Overflow, None),
                Admission::Closed => continue,
            }
        };
        let connection = Connection {
            peer,
            mode,
            routes: socket.routes.clone(),
            peers: rule.cloned(),
            busy: kept
                .as_ref()
                .map_or_else(|| Arc::new(AtomicUsize::new(0)), |k| k.1.clone()),
        };
        let task = ConnectionTask {
            connections: connections.clone(),
            shutdown: shutdown.clone(),
            alive: alive.clone(),
            kept,
        };
        // Each connection runs until it ends on its own; `alive` tells when all have.
        match accepted {
            Accepted::Unix(stream) => tokio::spawn(task.run(connection, stream)),
            Accepted::Tcp(stream, _) => tokio::spawn(task.run(connection, stream)),
        };
    }
    drop(alive);
    let _ = tokio::time::timeout(
        SHUTDOWN_GRACE + Duration::from_millis(100),
        all_closed.recv(),
    )
    .await;
}

/// What a connection's task needs besides the connection: the socket's table (to leave it),
/// shutdown, and the mark that keeps [`serve`] waiting until the task ends.
struct ConnectionTask {
    connections: Arc<Connections>,
    shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
    kept: Option<(u64, Arc<AtomicUsize>, oneshot::Receiver<()>)>,
}

impl ConnectionTask {
    async fn run<R: Routes, S>(self, connection: Connection<R>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mode = connection.mode;
        match self.kept {
            Some((id, _, closed)) => {
                connection.run(stream, closed, self.shutdown).await;
                self.connections.forget(id);
            }
            None => {
                let (_never, closed) = oneshot::channel();
                connection.run(stream, closed, self.shutdown).await;
                let count = match mode {
                    Mode::Overflow => &self.connections.overflow,
                    _ => &self.connections.refused,
                };
                count.fetch_sub(1, Ordering::SeqCst);
            }
        }
        drop(self.alive);
    }
}

/// Resolves once shutdown starts (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// hyper's HTTP/1.1 settings for keyd's sockets; `timer` is false only where no Tokio time
/// driver runs (the fuzzing harness), which turns the header timeout off.
fn builder(keep_alive: bool, timer: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(keep_alive)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .auto_date_header(false);
    if timer {
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
    } else {
        builder.header_read_timeout(None);
    }
    builder
}

struct Connection<R> {
    peer: Peer,
    mode: Mode,
    routes: Arc<R>,
    /// The Unix socket's rule (named in a refusal); none on TCP, where nobody is refused.
    peers: Option<PeerRule>,
    busy: Arc<AtomicUsize>,
}

impl<R: Routes> Connection<R> {
    /// Serves the connection until the peer is done, it is evicted (`closed` resolves), or
    /// shutdown starts (then finishes the request in progress, within the grace).
    async fn run<S>(
        self,
        stream: S,
        mut closed: oneshot::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mode, peer) = (self.mode, self.peer);
        let keep_alive = mode == Mode::Serve;
        let this = Arc::new(self);
        let service = hyper::service::service_fn(move |request| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.answer(request).await) }
        });
        let conn = builder(keep_alive, true).serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    log_failed(mode, peer, &e);
                }
                return;
            }
            _ = &mut closed => return,
            () = stopped(&mut shutdown) => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
    }

    async fn answer(&self, request: hyper::Request<Incoming>) -> hyper::Response<Answer> {
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let response = match self.mode {
            Mode::Refuse => {
                // Escaped: the request line is the caller's, and must not forge log lines.
                crate::log::warn(format_args!(
                    "refused {} {} from {}",
                    method.escape_debug(),
                    path.escape_debug(),
                    self.peer
                ));
                Response::error(
                    403,
                    format!(
                        "{} is not allowed to use this socket (see keyd {})",
                        self.peer,
                        self.peers.as_ref().map_or("--help", |p| p.option)
                    ),
                )
            }
            Mode::Overflow if !self.routes.is_cheap(&method, &path) => Response::error(
                503,
                format!(
                    "keyd is answering {MAX_CONNECTIONS} requests on this socket; try again shortly"
                ),
            ),
            // Busy only once the body is in: until then the connection may be evicted, so
            // heads whose bodies never come cannot hold every slot.
            Mode::Serve | Mode::Overflow => {
                match tokio::time::timeout(HEADER_TIMEOUT, read_body(request)).await {
                    Ok(Ok(body)) => {
                        let busy = Busy::new(self.busy.clone());
                        let request = Request { method, path, body };
                        let response = self.routes.answer(request, self.peer).await;
                        return Answer::new(response, busy);
                    }
                    Ok(Err(response)) => response,
                    Err(_) => Response::error(
                        408,
                        format!(
                            "the body did not arrive within {} s of the request head",
                            HEADER_TIMEOUT.as_secs()
                        ),
                    ),
                }
            }
        };
        Answer::new(response, Busy::new(self.busy.clone()))
    }
}

/// Logs a connection that hyper ended with an error: a request head it could not parse (it
/// answered 400 or 431 itself), from any peer, and every failure of a refused peer, so that a
/// refusal is logged even when no request reached a router. hyper's messages name the problem,
/// never the peer's bytes, so nothing the peer sent reaches the log. Timeouts of allowed peers
/// (an idle connection closed) are routine and not logged.
fn log_failed(mode: Mode, peer: Peer, e: &hyper::Error) {
    if mode == Mode::Refuse {
        crate::log::warn(format_args!("refused {peer}: {e}"));
    } else if e.is_parse() || e.is_parse_too_large() {
        crate::log::info(format_args!("closed a connection from {peer}: {e}"));
    }
}

/// Reads a request's body within [`MAX_BODY`].
async fn read_body(request: hyper::Request<Incoming>) -> Result<Vec<u8>, Response> {
    let too_large = || Response::error(413, format!("body larger than {MAX_BODY} bytes"));
    // Refused on its announced length, before any of it is read.
    let announced = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(Response::error(
            400,
            "the body ended before its announced length",
        )),
    }
}

/// Counts a request as being answered while it lives (the connection is not idle).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body: one piece with its length, or [`CHUNK`]-sized pieces sent chunked. It
/// holds the request's [`Busy`] mark until hyper has written it out.
pub struct Answer {
    pieces: VecDeque<Bytes>,
    length: Option<u64>,
    _busy: Option<Busy>,
}

impl Answer {
    fn new(response: Response, busy: Busy) -> hyper::Response<Answer> {
        let body = response.body;
        let length = (body.len() <= CHUNK).then_some(body.len() as u64);
        let mut pieces = VecDeque::new();
        let mut rest = body;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(CHUNK));
            pieces.push_back(piece);
        }
        let mut answer = hyper::Response::new(Answer {
            pieces,
            length,
            _busy: Some(busy),
        });
        *answer.status_mut() = hyper::StatusCode::from_u16(response.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        answer.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(response.content_type),
        );
        // The body given up on may still come: the connection ends rather than read it.
        if response.status == 408 {
            answer.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        answer
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.pieces.pop_front().map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// For the fuzzing harness: serves the bytes `data` as one connection's input with `routes`
/// (allowed peer, keep-alive, no timer), and returns every answer's status.
pub async fn serve_bytes<R: Routes>(data: &[u8], routes: Arc<R>) -> Vec<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut read, mut write) = tokio::io::split(client);
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (routes, seen) = (routes.clone(), seen.clone());
        async move {
            let method = request.method().as_str().to_owned();
            let path = request.uri().path().to_owned();
            let response = match read_body(request).await {
                Ok(body) => {
                    routes
                        .answer(Request { method, path, body }, Peer::Uid(0))
                        .await
                }
                Err(response) => response,
            };
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(response.status);
            let busy = Busy::new(Arc::new(AtomicUsize::new(0)));
            Ok::<_, Infallible>(Answer::new(response, busy))
        }
    });
    let server = async move {
        let _ = builder(true, false)
            .serve_connection(TokioIo::new(server), service)
            .await;
    };
    let writer = async move {
        let _ = write.write_all(data).await;
        let _ = write.shutdown().await;
    };
    let reader = async move {
        let mut sink = Vec::new();
        let _ = read.read_to_end(&mut sink).await;
    };
    tokio::join!(server, writer, reader);
    statuses.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
