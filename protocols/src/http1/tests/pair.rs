//! A client and a [`ServerConn`] joined by in-memory queues under a virtual clock: every byte
//! the client writes is delivered after `latency`, cut into reads of at most `mtu` bytes (or
//! at the split points a test names), the server's answers are decoded by the client's own
//! [`ResponseDecoder`], and time moves only to the next thing that can happen. `drive` is
//! bounded: a pair that keeps stepping without settling is a livelock and fails the test.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::http1::{
    ClientResponse, Http1Error, Limits, Request, Response, ResponseDecoder, ServerConfig,
    ServerConn, Status,
};

/// Steps `drive` takes at most before it calls the pair livelocked.
const MAX_STEPS: usize = 100_000;

/// The `Date` the simulated server sends.
pub(super) const DATE: &[u8] = b"Tue, 01 Dec 2026 00:00:00 GMT";

/// What the simulated handler saw of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

type Handler = Box<dyn FnMut(&Seen) -> Response>;

pub(super) struct Pair {
    start: Instant,
    pub now: Instant,
    pub server: ServerConn,
    /// Client bytes on the way, with the time they arrive.
    wire: VecDeque<(Instant, Vec<u8>)>,
    /// The client closes its side once the wire is empty.
    client_eof: bool,
    eof_delivered: bool,
    /// A request handed out whose streamed body is still being pulled.
    in_flight: Option<(Request, Vec<u8>)>,
    handler: Handler,
    /// Every request the handler answered, in order.
    pub seen: Vec<Seen>,
    /// Bytes the server wrote.
    pub written: Vec<u8>,
    /// Whether requests go in as shared buffers (the server's in-place path) or copies.
    pub shared: bool,
    pub latency: Duration,
    pub mtu: usize,
}

impl Pair {
    /// A pair whose server answers every request with `handler`.
    pub fn new(config: ServerConfig, handler: impl FnMut(&Seen) -> Response + 'static) -> Pair {
        let start = Instant::now();
        Pair {
            start,
            now: start,
            server: ServerConn::new(Rc::new(config), start),
            wire: VecDeque::new(),
            client_eof: false,
            eof_delivered: false,
            in_flight: None,
            handler: Box::new(handler),
            seen: Vec::new(),
            written: Vec::new(),
            shared: true,
            latency: Duration::from_millis(1),
            mtu: usize::MAX,
        }
    }

    /// A pair answering `200 ok` to everything.
    pub fn ok(config: ServerConfig) -> Pair {
        Pair::new(config, |_| Response::new(200).body("ok"))
    }

    /// The client writes `bytes` now.
    pub fn send(&mut self, bytes: &[u8]) {
        self.send_after(Duration::ZERO, bytes);
    }

    /// The client writes `bytes` `delay` from now (a slow peer).
    pub fn send_after(&mut self, delay: Duration, bytes: &[u8]) {
        let at = self.now + delay + self.latency;
        for piece in bytes.chunks(self.mtu.max(1)) {
            self.wire.push_back((at, piece.to_vec()));
        }
        self.wire.make_contiguous().sort_by_key(|(at, _)| *at);
    }

    /// The client writes `bytes` now, cut at `splits` (offsets into `bytes`).
    pub fn send_split(&mut self, bytes: &[u8], splits: &[usize]) {
        let mut last = 0;
        for &at in splits.iter().chain(std::iter::once(&bytes.len())) {
            let at = at.clamp(last, bytes.len());
            if at > last {
                self.wire
                    .push_back((self.now + self.latency, bytes[last..at].to_vec()));
            }
            last = at;
        }
    }

    /// The client closes its side after what it wrote.
    pub fn close_client(&mut self) {
        self.client_eof = true;
    }

    /// Runs until nothing more can happen: the wire is empty, the server waits for input that
    /// will not come (or is closed), and its next deadline is `limit` or more away.
    pub fn drive_for(&mut self, limit: Duration) {
        let end = self.now + limit;
        for _ in 0..MAX_STEPS {
            self.serve();
            if self.server.is_closing() {
                self.server.linger(self.now);
            }
            if self.server.is_closed() {
                return;
            }
            // The next event: a delivery, the client's close, or the server's deadline.
            let next_delivery = self.wire.front().map(|(at, _)| *at);
            let eof_due = (self.client_eof && self.wire.is_empty() && !self.eof_delivered)
                .then_some(self.now);
            let deadline = self.server.poll_timeout();
            let next = [next_delivery, eof_due, deadline]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { return };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            if eof_due.is_some() && next_delivery.is_none() {
                self.eof_delivered = true;
                self.server.handle_eof(self.now);
                continue;
            }
            if next_delivery == Some(next) {
                let (_, bytes) = self.wire.pop_front().expect("a delivery is due");
                if self.shared {
                    self.server.handle_shared(Rc::new(bytes), self.now);
                } else {
                    self.server.handle_input(&bytes, self.now);
                }
                continue;
            }
            self.server.handle_timeout(self.now);
        }
        panic!(
            "livelock: {MAX_STEPS} steps without settling: {:?}",
            self.server
        );
    }

    /// Runs until nothing more can happen within a minute of virtual time.
    pub fn drive(&mut self) {
        self.drive_for(Duration::from_secs(60));
    }

    /// Lets the server answer what it can.
    fn serve(&mut self) {
        loop {
            if let Some((req, mut body)) = self.in_flight.take() {
                match self.server.poll_body() {
                    Ok(Status::Complete(Some(piece))) => {
                        body.extend_from_slice(&piece);
                        self.in_flight = Some((req, body));
                        continue;
                    }
                    Ok(Status::Complete(None)) => self.answer(&req, body),
                    Ok(Status::Partial) => {
                        self.server.poll_transmit(&mut self.written);
                        self.in_flight = Some((req, body));
                        return;
                    }
                    Err(e) => self.server.respond_error(&e, DATE, &mut self.written),
                }
            }
            match self.server.poll_request() {
                None => {
                    self.server.poll_transmit(&mut self.written);
                    return;
                }
                Some(Err(e)) => self.server.respond_error(&e, DATE, &mut self.written),
                Some(Ok(req)) => {
                    if self.server.body_streams() {
                        self.in_flight = Some((req, Vec::new()));
                    } else {
                        let body = req.body().to_vec();
                        self.answer(&req, body);
                    }
                }
            }
        }
    }

    fn answer(&mut self, req: &Request, body: Vec<u8>) {
        let seen = Seen {
            method: req.method().to_string(),
            target: req.target().to_string(),
            body,
        };
        let response = (self.handler)(&seen);
        self.seen.push(seen);
        let follows = self
            .server
            .respond(&response, self.now, DATE, &mut self.written);
        if follows {
            self.server.end_body(&mut self.written);
        }
    }

    /// The responses the client decoded from what the server wrote (HEAD requests: none in
    /// these tests), and the error that stopped decoding, if any.
    pub fn responses(&self) -> (Vec<ClientResponse>, Option<Http1Error>) {
        let mut decoder = ResponseDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&self.written[..]);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf, false) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// The statuses of the responses written so far.
    pub fn statuses(&self) -> Vec<u16> {
        self.responses().0.iter().map(|r| r.status).collect()
    }

    /// Virtual time since the pair started.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}
