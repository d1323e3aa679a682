//! One server connection, sans-IO: bytes in, requests out; answers in, bytes out; deadlines as
//! data.
//!
//! The caller (the serve loop on engine sockets, a test's simulated peer, a fuzz target) feeds
//! what it reads to [`ServerConn::handle_shared`] or [`ServerConn::handle_input`], takes
//! requests from [`ServerConn::poll_request`] and answers each with [`ServerConn::respond`]
//! before it gets the next (pipelined requests are answered in order), writes what
//! [`ServerConn::poll_transmit`] and the answers put into its own buffer, waits at most until
//! [`ServerConn::poll_timeout`], and then calls [`ServerConn::handle_timeout`]. The connection
//! owns framing, keep-alive, `100 Continue`, limits and every deadline; it reads no clock and
//! does no I/O.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::ChunkedDecoder;
use super::request::{Framing, Head, parse_head_at};
use super::response::{BodyFraming, EncodeContext, LAST_CHUNK, encode_chunk, encode_response};
use super::{Http1Error, Limits, Request, Response, Status, Version};

/// A received buffer the connection and its requests share.
type Shared = Rc<dyn AsRef<[u8]>>;

/// What a connection enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Size limits of one request.
    pub limits: Limits,
    /// The `Server` value sent with every answer; `None` sends none.
    pub server_name: Option<Vec<u8>>,
    /// From the first byte of a request head to its end (slowloris).
    pub header_timeout: Duration,
    /// How long a body may go without a byte arriving while it is awaited.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
    /// How long an idle connection stays open once a shutdown began (see
    /// [`ServerConn::begin_shutdown`]).
    pub shutdown_drain: Duration,
    /// Bodies with a Content-Length up to this are read whole before the request is handed
    /// out (`Request::body`); larger and chunked ones are read with [`ServerConn::poll_body`].
    pub buffer_body_up_to: u64,
    /// How long a closing connection reads and drops what the client still sends, so that the
    /// close does not become a reset that destroys the answer before the client read it.
    pub linger: Duration,
    /// How much it drops at most before giving up on a clean close.
    pub linger_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            server_name: Some(b"coring".to_vec()),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_drain: Duration::from_millis(250),
            buffer_body_up_to: 64 * 1024,
            linger: Duration::from_secs(2),
            linger_bytes: 256 * 1024,
        }
    }
}

/// The connection's deadlines; at most one runs at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// A request head has started and must end by then.
    Header,
    /// A body is awaited and its next bytes must come by then.
    Body,
    /// Nothing is in progress; the connection closes then (sooner once a shutdown began).
    Idle,
    /// The answer is written and our side closed; the client's leftovers are dropped until then.
    Linger,
}

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Serving requests.
    Open,
    /// No more requests: once what was answered is written, close our side and
    /// [`ServerConn::linger`].
    Closing,
    /// Dropping what the client still sends, until the deadline or enough was dropped.
    Linger { until: Instant, dropped: usize },
    /// Done: close the socket.
    Closed,
    /// Answered `101 Switching Protocols`: the connection speaks another protocol now
    /// ([`ServerConn::take_upgraded`]).
    Upgraded,
}

/// A body being read, and for whom.
#[derive(Debug)]
struct BodyState {
    framing: Framing,
    chunked: Option<ChunkedDecoder>,
    seen: u64,
    mode: BodyMode,
    /// The client waits for `100 Continue` before it sends the body.
    continue_owed: bool,
}

#[derive(Debug)]
enum BodyMode {
    /// Read whole before the request is handed out (boxed: the other modes are empty, and
    /// a body state lives only while a body does).
    Whole(Box<(Request, Vec<u8>)>),
    /// Pulled by the request's handler through [`ServerConn::poll_body`].
    Stream,
    /// The handler answered without reading it all: the rest is dropped.
    Discard,
}

/// What the answer to the request handed out needs to know.
#[derive(Clone, Copy, Debug)]
struct Answering {
    keep_alive: bool,
    http10: bool,
    head: bool,
}

/// One HTTP/1.1 server connection: feed it what is read, take requests, answer each in
/// order, write what it encodes, and keep to its deadline (see the `http1` module docs).
pub struct ServerConn {
    config: Rc<ServerConfig>,
    phase: Phase,
    /// The received buffer being parsed in place, and how far parsing got.
    chunk: Option<(Shared, usize)>,
    /// Bytes that arrived in pieces (a head cut by the end of a read) and request bodies.
    input: BytesMut,
    body: Option<BodyState>,
    /// The request handed out and not answered yet.
    answering: Option<Answering>,
    /// The answer's body follows its head, sent by the caller (`send_chunk`, `end_body`).
    sending: Option<BodyFraming>,
    /// `100 Continue` is to be written now.
    continue_now: bool,
    /// The request stream broke (framing error) and the answer saying so is owed.
    broken: bool,
    /// The head or body deadline that closed the connection, if one did.
    timed_out: Option<Timer>,
    eof: bool,
    shutting_down: bool,
    /// The last time the caller told us.
    now: Instant,
    head_started: Option<Instant>,
    idle_since: Instant,
    /// When body bytes last arrived (or the body was first awaited).
    body_progress: Instant,
    drain_until: Option<Instant>,
    /// Output for a body being dropped (chunked decoding needs somewhere to put it).
    scratch: Vec<u8>,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConn")
            .field("phase", &self.phase)
            .field("buffered", &(self.input.len()))
            .field("answering", &self.answering.is_some())
            .field("timer", &self.timer())
            .finish_non_exhaustive()
    }
}

impl ServerConn {
    /// A connection opened at `now`.
    pub fn new(config: Rc<ServerConfig>, now: Instant) -> Self {
        ServerConn {
            config,
            phase: Phase::Open,
            chunk: None,
            input: BytesMut::new(),
            body: None,
            answering: None,
            sending: None,
            continue_now: false,
            broken: false,
            timed_out: None,
            eof: false,
            shutting_down: false,
            now,
            head_started: None,
            idle_since: now,
            body_progress: now,
            drain_until: None,
            scratch: Vec::new(),
        }
    }

    /// Bytes received at `now`, in a buffer the connection may keep: heads that lie whole in
    /// it are parsed where they are and their requests share it (no copy); the rest of it is
    /// copied when the next buffer arrives before it was parsed.
    pub fn handle_shared(&mut self, data: Shared, now: Instant) {
        self.now = now;
        if self.dropping(data.as_ref().as_ref().len()) {
            return;
        }
        self.body_progress = now;
        self.spill_chunk();
        if self.input.is_empty() && self.body.is_none() {
            self.chunk = Some((data, 0));
        } else {
            self.input.extend_from_slice(data.as_ref().as_ref());
        }
    }

    /// Bytes received at `now`, copied.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        self.now = now;
        if self.dropping(data.len()) {
            return;
        }
        self.body_progress = now;
        self.spill_chunk();
        self.input.extend_from_slice(data);
    }

    /// The client closed its side: requests already here are still answered.
    pub fn handle_eof(&mut self, now: Instant) {
        self.now = now;
        self.eof = true;
        if matches!(self.phase, Phase::Linger { .. }) {
            self.phase = Phase::Closed;
        }
    }

    /// The next request, once the previous one is answered. `None`: nothing complete yet
    /// (or no more requests: see [`ServerConn::is_closing`], [`ServerConn::is_closed`]).
    /// `Some(Err(e))`: the stream is broken; answer with [`ServerConn::respond_error`], then
    /// the connection closes. Changes after `handle_*` and `respond`.
    #[inline]
    pub fn poll_request(&mut self) -> Option<Result<Request, Http1Error>> {
        if self.phase != Phase::Open
            || self.answering.is_some()
            || self.sending.is_some()
            || self.broken
        {
            return None;
        }
        if self.body.is_some() {
            match self.advance_body() {
                Ok(Some(request)) => {
                    self.hand_out(&request);
                    return Some(Ok(request));
                }
                Ok(None) if self.body.is_some() => {
                    if self.eof {
                        return self.fail(Http1Error::BadRequest("body cut short"));
                    }
                    return None;
                }
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
        }
        match self.next_head() {
            Ok(Status::Complete((request, framing))) => {
                self.head_started = None;
                self.start(request, framing)
            }
            Ok(Status::Partial) => {
                if self.has_unparsed() {
                    self.head_started.get_or_insert(self.now);
                    if self.eof {
                        // A head cut off by the end of the stream.
                        self.phase = Phase::Closed;
                    }
                } else if self.eof {
                    self.phase = Phase::Closed;
                }
                None
            }
            Err(e) => self.fail(e),
        }
    }

    /// The next piece of the body of the request handed out, for bodies it did not carry
    /// whole: `Complete(Some(bytes))`, `Complete(None)` once the body is over, `Partial` when
    /// more must be received first (a `100 Continue` the client waits for is then owed:
    /// [`ServerConn::poll_transmit`]). Changes after `handle_*`.
    pub fn poll_body(&mut self) -> Result<Status<Option<Bytes>>, Http1Error> {
        let Some(state) = self.body.as_mut() else {
            return Ok(Status::Complete(None));
        };
        if !matches!(state.mode, BodyMode::Stream) {
            return Ok(Status::Complete(None));
        }
        self.spill_chunk();
        let state = self.body.as_mut().expect("body checked above");
        let (piece, done) = match state.framing {
            Framing::Length(n) => {
                let take = (n - state.seen).min(self.input.len() as u64) as usize;
                state.seen += take as u64;
                (self.input.split_to(take).freeze(), state.seen == n)
            }
            Framing::Chunked => {
                let dec = state.chunked.as_mut().expect("chunked body has a decoder");
                let mut out = Vec::new();
                let used = match dec.decode(&self.input, &mut out) {
                    Ok(used) => used,
                    Err(e) => {
                        self.broken_body();
                        return Err(e);
                    }
                };
                self.input.advance(used);
                (Bytes::from(out), dec.is_done())
            }
            Framing::None => (Bytes::new(), true),
        };
        if done {
            self.body = None;
        }
        if !piece.is_empty() {
            return Ok(Status::Complete(Some(piece)));
        }
        if done {
            return Ok(Status::Complete(None));
        }
        if self.eof {
            self.broken_body();
            return Err(Http1Error::BadRequest("body cut short"));
        }
        if state_continue(&mut self.body) {
            self.continue_now = true;
        }
        Ok(Status::Partial)
    }

    /// Encodes the answer to the request handed out into `out`, at `now`, with `date` (the
    /// current IMF-fixdate). Returns whether a body follows the head, to be sent by the caller
    /// (a file or [`ServerConn::send_chunk`]s), then [`ServerConn::end_body`]. What the
    /// handler left of the request's body is dropped as it arrives.
    ///
    /// # Panics
    /// If no request is waiting for an answer (a caller bug, not a peer's).
    pub fn respond(
        &mut self,
        response: &Response,
        now: Instant,
        date: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let answering = self
            .answering
            .take()
            .expect("respond called with no request to answer");
        self.now = now;
        self.idle_since = now;
        let keep_alive = answering.keep_alive
            && !self.broken
            && !response.has_refused_header()
            && (!self.shutting_down || self.next_request_is_here(now));
        let cx = EncodeContext {
            date,
            server: self.config.server_name.as_deref(),
            head_request: answering.head,
            keep_alive,
            http10: answering.http10,
        };
        encode_response(response, &cx, out);
        if let Some(state) = self.body.as_mut() {
            state.mode = BodyMode::Discard;
            // Nothing was promised: a client waiting for 100 Continue gets the answer instead.
            state.continue_owed = false;
            self.body_progress = now;
        }
        let status = response.status();
        let bodiless = status < 200 || status == 204 || status == 304;
        let follows = match response.following_body() {
            // A refused response was replaced by a 500 with its own body.
            Some(framing) if !answering.head && !bodiless && !response.has_refused_header() => {
                self.sending = Some(framing);
                true
            }
            _ => false,
        };
        if status == 101 && keep_alive {
            self.phase = Phase::Upgraded;
        } else if !keep_alive {
            self.phase = Phase::Closing;
        }
        follows
    }

    /// Answers a broken request stream (what `poll_request` returned as an error) and closes.
    pub fn respond_error(&mut self, error: &Http1Error, date: &[u8], out: &mut Vec<u8>) {
        let response = Response::new(error.status())
            .header("Content-Type", "text/plain")
            .body(error.to_string());
        let cx = EncodeContext {
            date,
            server: self.config.server_name.as_deref(),
            head_request: false,
            keep_alive: false,
            http10: false,
        };
        encode_response(&response, &cx, out);
        self.answering = None;
        self.body = None;
        self.phase = Phase::Closing;
    }

    /// One chunk of a chunked answer body (after `respond` said a body follows).
    pub fn send_chunk(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.sending == Some(BodyFraming::Chunked) {
            encode_chunk(data, out);
        }
    }

    /// The answer's body is all sent (by the caller, or in chunks: the last chunk goes into
    /// `out`).
    pub fn end_body(&mut self, out: &mut Vec<u8>) {
        if self.sending.take() == Some(BodyFraming::Chunked) {
            out.extend_from_slice(LAST_CHUNK);
        }
    }

    /// Bytes the connection owes the client by itself (`100 Continue`), appended to `out`.
    /// Changes after `poll_request` and `poll_body`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.continue_now) {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }

    /// The earliest deadline, if one runs: wait no longer than this for input before calling
    /// [`ServerConn::handle_timeout`]. Changes after every other call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer().map(|(_, at)| at)
    }

    /// Which deadline runs, and when it passes.
    pub fn timer(&self) -> Option<(Timer, Instant)> {
        let c = &self.config;
        match self.phase {
            Phase::Closed | Phase::Closing | Phase::Upgraded => return None,
            Phase::Linger { until, .. } => return Some((Timer::Linger, until)),
            Phase::Open => {}
        }
        if self.sending.is_some() {
            return None; // the caller's writes have their own deadline
        }
        if self.body.is_some() {
            return Some((Timer::Body, self.body_progress + c.body_timeout));
        }
        if self.answering.is_some() {
            return None; // the handler runs
        }
        if let Some(started) = self.head_started {
            return Some((Timer::Header, started + c.header_timeout));
        }
        let idle = self.idle_since + c.idle_timeout;
        Some((
            Timer::Idle,
            self.drain_until.map_or(idle, |drain| drain.min(idle)),
        ))
    }

    /// Time has come to `now`: a deadline that passed closes the connection (a slow head, a
    /// stalled body, an idle connection, the end of a linger).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if let Some((timer, at)) = self.timer()
            && now >= at
        {
            if matches!(timer, Timer::Header | Timer::Body) {
                self.timed_out = Some(timer);
            }
            self.phase = Phase::Closed;
        }
    }

    /// The deadline that closed the connection: `Header` (a head that did not end in time) or
    /// `Body` (a body that stopped coming); `None` if none did (an idle close is no failure).
    pub fn timed_out(&self) -> Option<Timer> {
        self.timed_out
    }

    /// The server is shutting down at `now`: the next answer says `Connection: close` (unless
    /// the client already pipelined another whole request, which is answered first, within
    /// [`ServerConfig::shutdown_drain`]), and an idle connection closes after that drain
    /// period unless a request already on its way arrives first.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.now = now;
        if !self.shutting_down {
            self.shutting_down = true;
            self.drain_until = Some(now + self.config.shutdown_drain);
        }
    }

    /// No more requests will be served: once everything answered is written, close the
    /// writing side and call [`ServerConn::linger`].
    pub fn is_closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    /// Our side is closed (at `now`): drop what the client still sends until the linger ends.
    pub fn linger(&mut self, now: Instant) {
        self.now = now;
        self.chunk = None;
        self.input = BytesMut::new();
        self.body = None;
        self.phase = if self.eof {
            Phase::Closed
        } else {
            Phase::Linger {
                until: now + self.config.linger,
                dropped: 0,
            }
        };
    }

    /// Whether the answer was `101 Switching Protocols`: no more HTTP on this connection.
    pub fn is_upgraded(&self) -> bool {
        self.phase == Phase::Upgraded
    }

    /// After a `101`: the bytes the client sent after the upgrade request (the new protocol's
    /// first bytes), for whoever speaks it now. The connection reads nothing more.
    pub fn take_upgraded(&mut self) -> Bytes {
        self.spill_chunk();
        self.body = None;
        std::mem::take(&mut self.input).freeze()
    }

    /// Done: close the socket.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the request handed out has a body to pull with [`ServerConn::poll_body`].
    pub fn body_streams(&self) -> bool {
        matches!(self.body.as_ref().map(|b| &b.mode), Some(BodyMode::Stream))
    }

    /// Whether the connection has nothing buffered and no request in progress.
    pub fn is_idle(&self) -> bool {
        self.answering.is_none() && self.body.is_none() && !self.has_unparsed()
    }

    // --- internals ---

    /// While lingering, input is only counted.
    fn dropping(&mut self, len: usize) -> bool {
        match &mut self.phase {
            Phase::Linger { dropped, .. } => {
                *dropped += len;
                if *dropped >= self.config.linger_bytes {
                    self.phase = Phase::Closed;
                }
                true
            }
            Phase::Closed => true,
            _ => false,
        }
    }

    /// While shutting down: whether the client's next request is already here whole (it
    /// pipelined), and the drain period still runs. Such a request reached the server, so it
    /// is answered too, the last one with `Connection: close`; a client that keeps
    /// pipelining is cut off when the drain period ends.
    fn next_request_is_here(&self, now: Instant) -> bool {
        if self.body.is_some() || self.drain_until.is_none_or(|until| now >= until) {
            return false;
        }
        let rest: &[u8] = if !self.input.is_empty() {
            &self.input
        } else if let Some((data, at)) = self.chunk.as_ref() {
            data.as_ref().as_ref().get(*at..).unwrap_or(&[])
        } else {
            &[]
        };
        rest.windows(4).any(|w| w == b"\r\n\r\n") || rest.windows(2).any(|w| w == b"\n\n")
    }

    /// Whether received bytes wait to be parsed.
    fn has_unparsed(&self) -> bool {
        !self.input.is_empty()
            || self
                .chunk
                .as_ref()
                .is_some_and(|(data, at)| *at < data.as_ref().as_ref().len())
    }

    /// Moves what is left of the shared buffer into the copy buffer.
    fn spill_chunk(&mut self) {
        if let Some((data, at)) = self.chunk.take() {
            let rest = &data.as_ref().as_ref()[at..];
            self.input.extend_from_slice(rest);
        }
    }

    /// The next head: from the copy buffer if one is being assembled there, else in place
    /// from the shared buffer (a head cut off at its end moves to the copy buffer).
    #[inline(always)]
    fn next_head(&mut self) -> Result<Status<(Request, Framing)>, Http1Error> {
        let limits = &self.config.limits;
        if !self.input.is_empty() {
            let Some((parsed, framing, len)) = parse_head_at(&self.input, 0, limits)? else {
                return Ok(Status::Partial);
            };
            let head = Head::Owned(self.input.split_to(len).freeze());
            return Ok(Status::Complete((parsed.into_request(head), framing)));
        }
        let Some((data, at)) = self.chunk.as_mut() else {
            return Ok(Status::Partial);
        };
        let all = data.as_ref().as_ref();
        if *at >= all.len() {
            self.chunk = None;
            return Ok(Status::Partial);
        }
        if all.len() > u32::MAX as usize {
            // Requests keep 32-bit offsets into their head: so large a buffer is copied.
            self.spill_chunk();
            return self.next_head();
        }
        match parse_head_at(all, *at, limits)? {
            Some((parsed, framing, len)) => {
                *at += len;
                let request = parsed.into_request(Head::Shared(Rc::clone(data)));
                Ok(Status::Complete((request, framing)))
            }
            None => {
                self.spill_chunk();
                Ok(Status::Partial)
            }
        }
    }

    /// A head arrived: hand the request out now, or once its small body is here.
    #[inline(always)]
    fn start(&mut self, request: Request, framing: Framing) -> Option<Result<Request, Http1Error>> {
        let continue_owed = request.expects_continue();
        let whole = match framing {
            Framing::None => {
                self.hand_out(&request);
                return Some(Ok(request));
            }
            Framing::Length(n) => n <= self.config.buffer_body_up_to,
            Framing::Chunked => false,
        };
        self.body_progress = self.now;
        let chunked = (framing == Framing::Chunked)
            .then(|| ChunkedDecoder::new(self.config.limits.max_body_bytes));
        if !whole {
            self.body = Some(BodyState {
                framing,
                chunked,
                seen: 0,
                mode: BodyMode::Stream,
                continue_owed,
            });
            self.hand_out(&request);
            return Some(Ok(request));
        }
        let capacity = match framing {
            Framing::Length(n) => n as usize,
            _ => 0,
        };
        self.body = Some(BodyState {
            framing,
            chunked,
            seen: 0,
            mode: BodyMode::Whole(Box::new((request, Vec::with_capacity(capacity)))),
            continue_owed,
        });
        // Its body may be here already.
        self.poll_request()
    }

    /// Moves the body bytes that are here: into the request read whole (returned once
    /// complete), or away for a body being dropped. A streamed body waits for its handler.
    fn advance_body(&mut self) -> Result<Option<Request>, Http1Error> {
        self.spill_chunk();
        let state = self.body.as_mut().expect("advance_body with a body");
        let (sink, keep) = match &mut state.mode {
            BodyMode::Stream => return Ok(None),
            BodyMode::Whole(whole) => (&mut whole.1, true),
            BodyMode::Discard => {
                self.scratch.clear();
                (&mut self.scratch, false)
            }
        };
        let done = match state.framing {
            Framing::Length(n) => {
                let take = (n - state.seen).min(self.input.len() as u64) as usize;
                if keep {
                    sink.extend_from_slice(&self.input[..take]);
                }
                self.input.advance(take);
                state.seen += take as u64;
                state.seen == n
            }
            Framing::Chunked => {
                let dec = state.chunked.as_mut().expect("chunked body has a decoder");
                let used = dec.decode(&self.input, sink)?;
                self.input.advance(used);
                dec.is_done()
            }
            Framing::None => true,
        };
        if !done {
            if std::mem::take(&mut state.continue_owed) {
                self.continue_now = true;
            }
            return Ok(None);
        }
        let state = self.body.take().expect("body present");
        match state.mode {
            BodyMode::Whole(whole) => {
                let (mut request, body) = *whole;
                request.set_body(Bytes::from(body));
                Ok(Some(request))
            }
            _ => Ok(None),
        }
    }

    /// Notes that `request` is handed out: its answer is owed before the next one.
    #[inline(always)]
    fn hand_out(&mut self, request: &Request) {
        self.answering = Some(Answering {
            keep_alive: request.keep_alive(),
            http10: request.version() == Version::Http10,
            head: request.is_head(),
        });
    }

    /// The request stream is broken by `e`.
    fn fail(&mut self, e: Http1Error) -> Option<Result<Request, Http1Error>> {
        let dropping = matches!(self.body.as_ref().map(|b| &b.mode), Some(BodyMode::Discard));
        self.body = None;
        self.chunk = None;
        self.input = BytesMut::new();
        if dropping {
            // The request was answered already; there is nobody to tell.
            self.phase = Phase::Closing;
            return None;
        }
        self.broken = true;
        Some(Err(e))
    }

    /// A streamed body failed: the answer closes the connection.
    fn broken_body(&mut self) {
        self.broken = true;
        self.body = None;
    }
}

/// Takes the `100 Continue` owed for `body`, if any.
fn state_continue(body: &mut Option<BodyState>) -> bool {
    body.as_mut()
        .is_some_and(|b| std::mem::take(&mut b.continue_owed))
}
