//! One WebSocket connection, sans-IO: received bytes in, messages and events out; messages in,
//! bytes out into the caller's buffer; every deadline as data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::deflate::{Agreed, Deflate};
use super::frame::{
    FrameHeader, MAX_CONTROL_PAYLOAD, Opcode, apply_mask, decode_header, encode_header,
};
use super::utf8::Utf8Stream;
use super::{WsError, close_code_allowed};
use crate::http1::Status;

/// Which side of the connection this is: a server expects masked frames and sends unmasked
/// ones; a client the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepted the upgrade.
    Server,
    /// Asked for it.
    Client,
}

/// What a connection enforces.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// Largest frame payload accepted (1009 above it).
    pub max_frame_bytes: u64,
    /// Largest message accepted, all its fragments together (1009 above it).
    pub max_message_bytes: u64,
    /// How long to wait for the peer's close after sending ours.
    pub close_timeout: Duration,
    /// Send a ping after this long without hearing from the peer (`None`: no heartbeat).
    pub ping_after_idle: Option<Duration>,
    /// How long a heartbeat ping waits for its pong before the connection is given up.
    pub pong_timeout: Duration,
    /// permessage-deflate for clients that offer it (`None`: never; compression state costs
    /// tens of KiB per connection while it lives).
    pub deflate: Option<super::deflate::DeflateConfig>,
    /// Subprotocols a server speaks, preferred first: the first of them the client offers is
    /// agreed (`Sec-WebSocket-Protocol`); none when the client offers none of them.
    pub protocols: Vec<String>,
    /// Messages of at least this many bytes that arrive whole in one receive buffer are handed
    /// out as views of that buffer, without a copy ([`WsConn::handle_buffer`]); on the engine
    /// the pooled buffer goes back to the core's pool when every view of it is dropped, so
    /// copy a message you keep for long. `None`: every message is copied out.
    pub share_buffers_from: Option<usize>,
}

impl WsConfig {
    /// The subprotocol a server agrees with a client that offers `offered` (see
    /// [`WsConfig::protocols`]).
    pub fn choose_protocol<'a>(&'a self, offered: &[String]) -> Option<&'a str> {
        self.protocols
            .iter()
            .find(|ours| offered.iter().any(|o| o == *ours))
            .map(String::as_str)
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_frame_bytes: 16 << 20,
            max_message_bytes: 64 << 20,
            close_timeout: Duration::from_secs(5),
            ping_after_idle: None,
            pong_timeout: Duration::from_secs(10),
            deflate: None,
            protocols: Vec::new(),
            share_buffers_from: Some(4096),
        }
    }
}

/// Received bytes that a connection may decode where they lie and keep parts of
/// ([`WsConn::handle_buffer`]).
pub trait RecvBuffer: AsRef<[u8]> {
    /// The bytes, to unmask in place.
    fn as_mut_bytes(&mut self) -> &mut [u8];
    /// The bytes as `Bytes`, without a copy.
    fn into_bytes(self) -> Bytes;
}

impl RecvBuffer for BytesMut {
    fn as_mut_bytes(&mut self) -> &mut [u8] {
        self
    }

    fn into_bytes(self) -> Bytes {
        self.freeze()
    }
}

impl RecvBuffer for Vec<u8> {
    fn as_mut_bytes(&mut self) -> &mut [u8] {
        self
    }

    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

/// A complete message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Text, checked to be UTF-8.
    Text(Bytes),
    /// Binary data.
    Binary(Bytes),
}

impl Message {
    /// The payload.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Message::Text(b) | Message::Binary(b) => b,
        }
    }

    /// The opcode of its frame.
    fn opcode(&self) -> Opcode {
        match self {
            Message::Text(_) => Opcode::Text,
            Message::Binary(_) => Opcode::Binary,
        }
    }

    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(b) => std::str::from_utf8(b).ok(),
            Message::Binary(_) => None,
        }
    }
}

/// A close frame's code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code (1000 normal, 1001 going away, …).
    pub code: u16,
    /// Why, as UTF-8 text (at most 123 bytes).
    pub reason: Bytes,
}

/// What the peer sent, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete message.
    Message(Message),
    /// A ping (answered with a pong by the connection itself: see [`WsConn::poll_transmit`]).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close: `None` when it gave no code (1005). The reply is queued if the
    /// close was the peer's idea; once it is sent the connection is closed.
    Close(Option<CloseFrame>),
}

/// The connection's deadlines, one armed at a time ([`WsConn::poll_timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Our close is sent: the peer's must come by then.
    Close,
    /// Heard nothing for `ping_after_idle`: time to ping.
    Ping,
    /// The heartbeat ping's pong is due.
    Pong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// We sent our close at this time and wait for the peer's.
    CloseSent(Instant),
    /// Done once what is queued has been handed out by `poll_transmit`.
    Closing,
    Closed,
}

/// The data frame whose payload is arriving.
#[derive(Clone, Copy, Debug)]
struct Frame {
    header: FrameHeader,
    remaining: u64,
    /// Bytes of the payload already taken (the mask's position).
    offset: usize,
    /// Bytes of a single-frame message's payload unmasked and checked where they lie in the
    /// input, waiting for the rest (so that the message is handed out without a copy).
    held: usize,
}

/// The most a frame's header makes the input reserve ahead of its payload (a larger frame's
/// buffer grows as its bytes come, so a header alone cannot make us allocate much).
const RESERVE_AHEAD: u64 = 256 * 1024;

/// The message being assembled from its fragments.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// Sent compressed (RSV1 on its first frame): inflated into `buf` as it arrives.
    compressed: bool,
    utf8: Utf8Stream,
    /// The payload so far (inflated, if compressed); empty while a message in one frame
    /// waits where it lies in the input.
    buf: Vec<u8>,
}

/// How a server connection frames a message, so that one encoding serves many peers: every
/// connection with the same `Sharing` takes the same bytes ([`SharedEncoder`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// Uncompressed frames.
    Plain,
    /// Compressed, each message from an empty window (`server_no_context_takeover`).
    Compressed {
        /// The compressor's window.
        window_bits: u8,
        /// zlib level.
        level: u32,
        /// Messages shorter than this go out uncompressed.
        min_compress_bytes: usize,
    },
}

/// Frames messages once for many server connections (see [`WsConn::sharing`]); keeps one
/// compressor per kind of compressed sharing it has met.
#[derive(Debug, Default)]
pub struct SharedEncoder {
    compressors: Vec<(Sharing, Deflate)>,
}

impl SharedEncoder {
    /// An encoder with no compressor yet.
    pub fn new() -> SharedEncoder {
        SharedEncoder::default()
    }

    /// Appends `message` framed for connections whose [`WsConn::sharing`] is `sharing`.
    pub fn encode(&mut self, message: &Message, sharing: Sharing, out: &mut Vec<u8>) {
        let opcode = message.opcode();
        let payload = message.bytes();
        let (window_bits, level, min_compress_bytes) = match sharing {
            Sharing::Compressed {
                window_bits,
                level,
                min_compress_bytes,
            } if payload.len() >= min_compress_bytes => (window_bits, level, min_compress_bytes),
            // Plain, or too short to be worth compressing.
            _ => {
                write_frame(out, opcode, false, None, payload);
                return;
            }
        };
        let at = match self.compressors.iter().position(|(s, _)| *s == sharing) {
            Some(at) => at,
            None => {
                let agreed = Agreed {
                    our_no_context_takeover: true,
                    peer_no_context_takeover: true,
                    our_window_bits: window_bits,
                    min_compress_bytes,
                    level,
                };
                self.compressors.push((sharing, Deflate::new(agreed)));
                self.compressors.len() - 1
            }
        };
        let compressed = self.compressors[at].1.compressed(payload);
        write_frame(out, opcode, true, None, compressed);
    }
}

/// One WebSocket connection. See the [module docs](super) for the flow.
#[derive(Debug)]
pub struct WsConn {
    role: Role,
    config: Arc<WsConfig>,
    input: BytesMut,
    frame: Option<Frame>,
    message: Option<Partial>,
    /// What the connection owes the peer by itself: pongs, the close reply.
    owed: Vec<u8>,
    phase: Phase,
    /// An error to report once, then nothing more.
    /// Boxed: rare, and an error carries a description.
    failure: Option<Box<WsError>>,
    reported: bool,
    eof: bool,
    last_heard: Instant,
    pong_due: Option<Instant>,
    masks: MaskKeys,
    /// permessage-deflate, when the handshake agreed it.
    deflate: Option<Box<Deflate>>,
}

impl WsConn {
    /// A connection in `role` whose handshake completed at `now`. `mask_seed` seeds the
    /// masking keys of a client (take it from the OS's random source); a server ignores it.
    pub fn new(
        role: Role,
        config: impl Into<Arc<WsConfig>>,
        now: Instant,
        mask_seed: u64,
    ) -> WsConn {
        WsConn {
            role,
            config: config.into(),
            input: BytesMut::new(),
            frame: None,
            message: None,
            owed: Vec::new(),
            phase: Phase::Open,
            failure: None,
            reported: false,
            eof: false,
            last_heard: now,
            pong_due: None,
            masks: MaskKeys(mask_seed),
            deflate: None,
        }
    }

    /// The connection with permessage-deflate as the handshake agreed it: messages from the
    /// peer marked compressed are inflated (never past `max_message_bytes`), and ours are
    /// compressed from `min_compress_bytes` up.
    pub fn enable_deflate(&mut self, agreed: Agreed) {
        self.deflate = Some(Box::new(Deflate::new(agreed)));
    }

    /// Bytes received at `now`. Changes what [`WsConn::poll_event`] returns.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.last_heard = now;
    }

    /// Bytes received at `now` in a buffer the connection may keep. When the buffer begins
    /// with a whole message of [`WsConfig::share_buffers_from`] bytes or more in one
    /// uncompressed frame, and nothing else is in progress, that message is unmasked and
    /// checked where it lies and returned at once as a view of the buffer (no copy); deliver
    /// it before what [`WsConn::poll_event`] returns next. Everything else is taken as
    /// [`WsConn::handle_input`] takes it.
    pub fn handle_buffer<B: RecvBuffer>(&mut self, mut buf: B, now: Instant) -> Option<Message> {
        let Some((header_len, header)) = self.whole_message_at_start(buf.as_ref()) else {
            self.handle_input(buf.as_ref(), now);
            return None;
        };
        self.last_heard = now;
        let end = header_len + header.len as usize;
        let payload = &mut buf.as_mut_bytes()[header_len..end];
        if let Some(key) = header.mask {
            apply_mask(payload, key, 0);
        }
        let text = header.opcode == Opcode::Text;
        if text && std::str::from_utf8(payload).is_err() {
            self.fail(WsError::InvalidUtf8);
            return None;
        }
        let bytes = buf.into_bytes();
        if bytes.len() > end {
            self.input.extend_from_slice(&bytes[end..]);
        }
        let body = bytes.slice(header_len..end);
        Some(if text {
            Message::Text(body)
        } else {
            Message::Binary(body)
        })
    }

    /// The header of the whole message `bytes` begin with, if it may be handed out where it
    /// lies: large enough, in one uncompressed frame, allowed, and nothing before it pending.
    fn whole_message_at_start(&self, bytes: &[u8]) -> Option<(usize, FrameHeader)> {
        let from = self.config.share_buffers_from?;
        let idle = self.input.is_empty() && self.frame.is_none() && self.message.is_none();
        if !idle || self.phase != Phase::Open || self.failure.is_some() || self.eof {
            return None;
        }
        let Ok(Status::Complete((header, header_len))) = decode_header(bytes) else {
            return None;
        };
        let len = usize::try_from(header.len).ok()?;
        let data = matches!(header.opcode, Opcode::Text | Opcode::Binary);
        if !data || !header.fin || header.rsv1 || len < from || bytes.len() - header_len < len {
            return None;
        }
        // Anything the rules refuse goes the usual way, to be refused there.
        self.check(&header).ok()?;
        Some((header_len, header))
    }

    /// The peer closed its side at `now` (end of stream).
    pub fn handle_eof(&mut self, now: Instant) {
        self.last_heard = now;
        self.eof = true;
    }

    /// The next thing the peer sent: `None` when more bytes are needed (or the connection is
    /// over). An `Err` is returned once: the connection then sends the error's close code
    /// ([`WsConn::poll_transmit`]) and ends. Changes after `handle_input`, `handle_eof` and
    /// `handle_timeout`.
    pub fn poll_event(&mut self) -> Option<Result<Event, WsError>> {
        loop {
            if let Some(e) = self.failure.as_deref().copied() {
                if self.reported {
                    return None;
                }
                self.reported = true;
                return Some(Err(e));
            }
            if matches!(self.phase, Phase::Closing | Phase::Closed) {
                return None;
            }
            let Some(frame) = self.frame else {
                match self.next_header() {
                    Ok(Some(Some(event))) => return Some(Ok(event)),
                    Ok(Some(None)) => continue,
                    Ok(None) => {
                        if self.eof {
                            self.fail(WsError::Abrupt);
                            continue;
                        }
                        return None;
                    }
                    Err(e) => {
                        self.fail(e);
                        continue;
                    }
                }
            };
            match self.take_payload(frame) {
                Ok(Some(message)) => return Some(Ok(Event::Message(message))),
                Ok(None) if self.frame.is_some() => {
                    if self.eof {
                        self.fail(WsError::Abrupt);
                        continue;
                    }
                    return None;
                }
                Ok(None) => {}
                Err(e) => self.fail(e),
            }
        }
    }

    /// Encodes `message` into `out` as one frame. Fails once our close is sent.
    pub fn send(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<(), WsError> {
        self.encode(message, out, false).map(|_| ())
    }

    /// Like [`WsConn::send`], except that when the payload goes on the wire as it is (a
    /// server's frame, not compressed) only the frame's header is encoded into `out` and
    /// `true` returned: the caller sends the payload right after it (a vectored write, no
    /// copy). `false`: `out` holds the whole frame.
    pub fn send_header(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<bool, WsError> {
        self.encode(message, out, true)
    }

    fn encode(
        &mut self,
        message: &Message,
        out: &mut Vec<u8>,
        header_only: bool,
    ) -> Result<bool, WsError> {
        let opcode = message.opcode();
        if self.phase != Phase::Open {
            return Err(WsError::Closed);
        }
        let payload = message.bytes();
        let mask = self.next_mask();
        if let Some(deflate) = self.deflate.as_mut()
            && deflate.worth_it(payload.len())
        {
            write_frame(out, opcode, true, mask, deflate.compressed(payload));
            return Ok(false);
        }
        if header_only && mask.is_none() {
            encode_header(out, true, false, opcode, None, payload.len() as u64);
            return Ok(true);
        }
        write_frame(out, opcode, false, mask, payload);
        Ok(false)
    }

    /// Encodes a ping carrying `payload` (at most 125 bytes) into `out`.
    pub fn ping(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(WsError::TooBig("ping payload"));
        }
        if self.phase != Phase::Open {
            return Err(WsError::Closed);
        }
        let mask = self.next_mask();
        write_frame(out, Opcode::Ping, false, mask, payload);
        Ok(())
    }

    /// Starts the closing handshake at `now` with `code` and `reason` (cut to 123 bytes at a
    /// character boundary): the close goes into `out`, and the peer's must arrive within
    /// `close_timeout`.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant, out: &mut Vec<u8>) {
        if self.phase != Phase::Open {
            return;
        }
        let payload = close_payload(Some(code), reason);
        let mask = self.next_mask();
        write_frame(out, Opcode::Close, false, mask, &payload);
        self.phase = Phase::CloseSent(now);
    }

    /// Bytes the connection owes the peer by itself (pongs, the reply to the peer's close, the
    /// close that reports an error), appended to `out`. Changes after `poll_event` and
    /// `handle_timeout`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.owed);
        if self.phase == Phase::Closing {
            self.phase = Phase::Closed;
        }
    }

    /// The earliest deadline and which it is. Changes after every `handle_*` and `close`.
    pub fn poll_timeout(&self) -> Option<(Timer, Instant)> {
        match self.phase {
            Phase::CloseSent(at) => Some((Timer::Close, at + self.config.close_timeout)),
            Phase::Open => {
                if let Some(due) = self.pong_due {
                    return Some((Timer::Pong, due));
                }
                let idle = self.config.ping_after_idle?;
                Some((Timer::Ping, self.last_heard + idle))
            }
            Phase::Closing | Phase::Closed => None,
        }
    }

    /// Time has come to `now`: a close handshake that ran out ends the connection; a heartbeat
    /// ping is queued, or an unanswered one fails the connection.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some((timer, due)) = self.poll_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        match timer {
            Timer::Close => self.phase = Phase::Closed,
            Timer::Pong => {
                self.failure = Some(Box::new(WsError::PeerUnresponsive));
                self.phase = Phase::Closed;
            }
            Timer::Ping => {
                self.owe(Opcode::Ping, b"");
                self.pong_due = Some(now + self.config.pong_timeout);
            }
        }
    }

    /// The connection is over: close the socket once what `poll_transmit` gave is written.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed && self.owed.is_empty()
    }

    /// Whether more messages may be sent (our close is not sent yet).
    pub fn can_send(&self) -> bool {
        self.phase == Phase::Open
    }

    /// What the connection enforces.
    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    /// Whether each message we send decodes without the ones before it (no compression window
    /// is kept between them), so that one may be dropped unsent.
    pub fn frames_stand_alone(&self) -> bool {
        self.deflate
            .as_ref()
            .is_none_or(|d| d.agreed().our_no_context_takeover)
    }

    /// How a message for this connection may be framed once for many peers; `None` when it
    /// must be framed for this connection alone (a client masks every frame, and a compressor
    /// that keeps its window between messages is this connection's own) or it is closing.
    /// A frame from [`SharedEncoder`] for this sharing may be sent as if [`WsConn::send`]
    /// had made it.
    pub fn sharing(&self) -> Option<Sharing> {
        if self.role != Role::Server || self.phase != Phase::Open {
            return None;
        }
        match &self.deflate {
            None => Some(Sharing::Plain),
            Some(d) if d.agreed().our_no_context_takeover => {
                let a = d.agreed();
                Some(Sharing::Compressed {
                    window_bits: a.our_window_bits,
                    level: a.level,
                    min_compress_bytes: a.min_compress_bytes,
                })
            }
            Some(_) => None,
        }
    }

    // --- internals ---

    /// Decodes the next header. A control frame is handled whole (its event, if any); a data
    /// frame's payload follows. `Ok(None)`: more bytes needed.
    fn next_header(&mut self) -> Result<Option<Option<Event>>, WsError> {
        let (header, header_len) = match decode_header(&self.input)? {
            Status::Complete(h) => h,
            Status::Partial => return Ok(None),
        };
        self.check(&header)?;
        if header.opcode.is_control() {
            let total = header_len + header.len as usize;
            if self.input.len() < total {
                return Ok(None);
            }
            self.input.advance(header_len);
            let mut payload = self.input.split_to(header.len as usize);
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key, 0);
            }
            return self.control(header.opcode, payload.freeze()).map(Some);
        }
        self.input.advance(header_len);
        if header.opcode != Opcode::Continuation {
            self.message = Some(Partial {
                text: header.opcode == Opcode::Text,
                buf: Vec::new(),
                utf8: Utf8Stream::new(),
                compressed: header.rsv1,
            });
        }
        self.frame = Some(Frame {
            header,
            remaining: header.len,
            offset: 0,
            held: 0,
        });
        // Room for the rest of the payload as it comes, in one piece (no growing copy by copy);
        // nothing when it is all here already.
        let missing = (header.len.min(RESERVE_AHEAD) as usize).saturating_sub(self.input.len());
        if missing > 0 {
            self.input.reserve(missing);
        }
        Ok(Some(None))
    }

    /// What the role, the message in progress and the limits allow of a header.
    fn check(&self, h: &FrameHeader) -> Result<(), WsError> {
        if h.rsv23 {
            return Err(WsError::Protocol("reserved bits set without an extension"));
        }
        if h.rsv1 {
            // permessage-deflate marks a message's first frame, and only data frames.
            let first_data = matches!(h.opcode, Opcode::Text | Opcode::Binary);
            if self.deflate.is_none() {
                return Err(WsError::Protocol("reserved bits set without an extension"));
            }
            if !first_data {
                return Err(WsError::Protocol(
                    "RSV1 on a frame that does not start a message",
                ));
            }
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(WsError::Protocol("unmasked frame from a client")),
            (Role::Client, true) => return Err(WsError::Protocol("masked frame from a server")),
            _ => {}
        }
        if h.opcode.is_control() {
            return Ok(());
        }
        match (h.opcode, &self.message) {
            (Opcode::Continuation, None) => {
                return Err(WsError::Protocol("continuation without a message"));
            }
            (Opcode::Text | Opcode::Binary, Some(_)) => {
                return Err(WsError::Protocol("a new message inside a fragmented one"));
            }
            _ => {}
        }
        if h.len > self.config.max_frame_bytes {
            return Err(WsError::TooBig("frame"));
        }
        let so_far = match (h.opcode, &self.message) {
            // A compressed message's size is bounded as it is inflated.
            (Opcode::Continuation, Some(m)) if !m.compressed => m.buf.len() as u64,
            _ => 0,
        };
        if so_far + h.len > self.config.max_message_bytes {
            return Err(WsError::TooBig("message"));
        }
        Ok(())
    }

    /// Takes what has arrived of the current data frame's payload; the message once its last
    /// frame is complete.
    fn take_payload(&mut self, mut frame: Frame) -> Result<Option<Message>, WsError> {
        let take = frame.remaining.min(self.input.len() as u64) as usize;
        if take == 0 && frame.remaining > 0 {
            return Ok(None);
        }
        let message = self.message.as_mut().expect("a data frame has its message");
        let alone = frame.header.fin && !message.compressed && message.buf.is_empty();
        if alone && (take as u64) < frame.remaining {
            // A message in one frame, not all here: unmask and check what came where it lies
            // and wait for the rest, to hand the message out without copying it.
            let arrived = &mut self.input[frame.held..take];
            if let Some(key) = frame.header.mask {
                apply_mask(arrived, key, frame.offset + frame.held);
            }
            if message.text && message.utf8.feed(arrived).is_err() {
                return Err(WsError::InvalidUtf8);
            }
            frame.held = take;
            self.frame = Some(frame);
            return Ok(None);
        }
        let mut piece = self.input.split_to(take);
        if let Some(key) = frame.header.mask {
            apply_mask(&mut piece[frame.held..], key, frame.offset + frame.held);
        }
        frame.offset += take;
        frame.remaining -= take as u64;
        let last = frame.remaining == 0 && frame.header.fin;
        let message = self.message.as_mut().expect("a data frame has its message");
        // The message's body when it is this one piece (handed out where it lies, no copy).
        let mut whole = None;
        if message.compressed {
            let deflate = self.deflate.as_mut().expect("checked with the header");
            let from = message.buf.len();
            deflate.decompress(
                &piece,
                last,
                &mut message.buf,
                self.config.max_message_bytes,
            )?;
            if message.text && message.utf8.feed(&message.buf[from..]).is_err() {
                return Err(WsError::InvalidUtf8);
            }
        } else {
            if message.text && message.utf8.feed(&piece[frame.held..]).is_err() {
                return Err(WsError::InvalidUtf8);
            }
            if last && message.buf.is_empty() {
                whole = Some(piece.freeze());
            } else {
                message.buf.extend_from_slice(&piece);
            }
        }
        if frame.remaining > 0 {
            self.frame = Some(frame);
            return Ok(None);
        }
        self.frame = None;
        if !last {
            return Ok(None);
        }
        let mut message = self.message.take().expect("checked above");
        if message.text && message.utf8.finish().is_err() {
            return Err(WsError::InvalidUtf8);
        }
        let body = whole.unwrap_or_else(|| Bytes::from(message.buf));
        Ok(Some(if message.text {
            Message::Text(body)
        } else {
            Message::Binary(body)
        }))
    }

    /// A whole control frame.
    fn control(&mut self, opcode: Opcode, payload: Bytes) -> Result<Option<Event>, WsError> {
        match opcode {
            Opcode::Ping => {
                if self.phase == Phase::Open {
                    self.owe(Opcode::Pong, &payload);
                }
                Ok(Some(Event::Ping(payload)))
            }
            Opcode::Pong => {
                self.pong_due = None;
                Ok(Some(Event::Pong(payload)))
            }
            Opcode::Close => {
                let frame = parse_close(&payload)?;
                match self.phase {
                    Phase::Open => {
                        // Echo the code (none if the peer gave none), then done.
                        let reply = close_payload(frame.as_ref().map(|f| f.code), "");
                        self.owe(Opcode::Close, &reply);
                        self.phase = Phase::Closing;
                    }
                    Phase::CloseSent(_) => self.phase = Phase::Closed,
                    Phase::Closing | Phase::Closed => {}
                }
                Ok(Some(Event::Close(frame)))
            }
            Opcode::Continuation | Opcode::Text | Opcode::Binary => {
                unreachable!("only control opcodes reach here")
            }
        }
    }

    /// The connection failed with `e`: our close says why (unless it was sent already), and
    /// the error is reported once.
    fn fail(&mut self, e: WsError) {
        self.failure = Some(Box::new(e));
        self.input = BytesMut::new();
        self.frame = None;
        self.message = None;
        if self.phase == Phase::Open && !matches!(e, WsError::Abrupt) {
            let payload = close_payload(Some(e.close_code()), "");
            self.owe(Opcode::Close, &payload);
            self.phase = Phase::Closing;
        } else {
            self.phase = Phase::Closed;
        }
    }

    /// A frame the connection owes the peer by itself, for `poll_transmit`.
    fn owe(&mut self, opcode: Opcode, payload: &[u8]) {
        let mask = self.next_mask();
        write_frame(&mut self.owed, opcode, false, mask, payload);
    }

    /// The key for the next frame we send: a client masks every frame, a server none.
    fn next_mask(&mut self) -> Option<[u8; 4]> {
        match self.role {
            Role::Client => Some(self.masks.next_key()),
            Role::Server => None,
        }
    }
}

/// Appends one whole frame; `compressed` sets RSV1 (permessage-deflate), `mask` masks it.
fn write_frame(
    out: &mut Vec<u8>,
    opcode: Opcode,
    compressed: bool,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    encode_header(out, true, compressed, opcode, mask, payload.len() as u64);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// A close frame's payload: the code and as much of `reason` as fits (123 bytes, cut at a
/// character boundary); empty without a code.
fn close_payload(code: Option<u16>, reason: &str) -> Vec<u8> {
    let Some(code) = code else {
        return Vec::new();
    };
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// A received close frame's code and reason, validated.
fn parse_close(payload: &Bytes) -> Result<Option<CloseFrame>, WsError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WsError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                return Err(WsError::Protocol("close code not allowed on the wire"));
            }
            let reason = payload.slice(2..);
            if std::str::from_utf8(&reason).is_err() {
                return Err(WsError::InvalidUtf8);
            }
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// A client's masking keys: SplitMix64 from a seed the caller takes from the OS.
#[derive(Debug)]
struct MaskKeys(u64);

impl MaskKeys {
    fn next_key(&mut self) -> [u8; 4] {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let b = z.to_le_bytes();
        [b[0], b[1], b[2], b[3]]
    }
}
