//! Rooms past one process: a bridge through a NATS server.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use coring::net::{PooledReader, TcpStream};
use coring::shard::Mailbox;
use coring::time;

use super::{Member, Rooms};
use crate::nats::{self, ServerOp, Status};

/// Where the bridge connects and how it behaves.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// The NATS server.
    pub server: SocketAddr,
    /// Subjects are `PREFIX.ROOM` (the room's name with `.`, `*`, `>`, `%`, white space and
    /// control characters written `%HH`).
    pub prefix: String,
    /// The connection's name, as the server shows it.
    pub name: String,
    /// The first wait before connecting again; it doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// The longest wait between attempts.
    pub reconnect_max: Duration,
    /// Messages kept for the server while it is away (the oldest go first past this).
    pub buffer: usize,
    /// Deadline for connecting and the server's `INFO`.
    pub connect_timeout: Duration,
}

impl BridgeConfig {
    /// Defaults for `server`: prefix `rooms`, reconnects from 100 ms to 2 s, 4,096 messages
    /// kept while it is away.
    pub fn new(server: SocketAddr) -> BridgeConfig {
        BridgeConfig {
            server,
            prefix: "rooms".into(),
            name: "coring-rooms".into(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            buffer: 4096,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// What a bridge did (read from anywhere).
#[derive(Debug, Default)]
pub struct BridgeCounters {
    /// Connected to the server now.
    pub connected: AtomicBool,
    /// Connections made (the first, then each reconnect).
    pub connects: AtomicU64,
    /// Messages sent to the server.
    pub published: AtomicU64,
    /// Messages from other processes published here.
    pub received: AtomicU64,
    /// Messages of other processes this one never got: gaps in their sequence numbers, counted
    /// when the message after a gap arrives (the server keeps nothing for a subscriber that
    /// was away).
    pub missed: AtomicU64,
    /// Messages of other processes received twice (resent after a lost connection) and
    /// dropped.
    pub duplicates: AtomicU64,
    /// Our messages dropped: the bridge's mailbox or its buffer for an absent server was
    /// full, or the message is larger than the server takes.
    pub dropped: AtomicU64,
    /// Messages from the server that were not a bridge's (too short, or a subject outside
    /// the prefix).
    pub foreign: AtomicU64,
}

/// One message for the other processes.
#[derive(Debug)]
struct Outgoing {
    room: Arc<str>,
    payload: Bytes,
}

/// A bridge between this process's rooms and other processes' rooms of the same names,
/// through a NATS server: it runs on one core ([`Bridge::run`]), where it subscribes to
/// `PREFIX.>`. [`Bridge::publish`] from any core publishes to the room here and hands the
/// message to the bridge, which publishes it to the server once for this process, however
/// many members the room has anywhere. Messages from other processes are published to the
/// room here. Every message carries its process's id and a sequence number per room, so the
/// order of each publisher is kept, a message resent after a lost connection is taken once,
/// and what was missed while the server was away is counted ([`BridgeCounters::missed`]).
/// The server does not send a process its own messages.
#[derive(Clone)]
pub struct Bridge {
    mail: Mailbox<Outgoing>,
    core: usize,
    origin: u64,
    counters: Arc<BridgeCounters>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("core", &self.core)
            .field("origin", &format_args!("{:016x}", self.origin))
            .finish_non_exhaustive()
    }
}

/// A message's header on the wire: the publishing process's id and its sequence number for
/// the room, both big-endian.
const HEADER: usize = 16;
/// Messages taken from the mailbox into one write.
const BATCH: usize = 256;

impl Bridge {
    /// A bridge for `runtime` that will run on core `core`. Make it before the runtime runs
    /// and clone it into every core.
    pub fn new(runtime: &coring::Runtime, core: usize) -> Bridge {
        Bridge {
            mail: Mailbox::new(runtime, 8192),
            core,
            origin: random_origin(),
            counters: Arc::default(),
        }
    }

    /// What it did so far.
    pub fn counters(&self) -> &BridgeCounters {
        &self.counters
    }

    /// Publishes `payload` to `room` here, and through the bridge to the room in the other
    /// processes.
    pub fn publish<M: Member>(&self, rooms: &Rooms<M>, room: &str, payload: Bytes) {
        rooms.publish(room, payload.clone());
        let out = Outgoing {
            room: Arc::from(room),
            payload,
        };
        if self.mail.try_send(self.core, out).is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Runs the bridge on this core (the one given to [`Bridge::new`]) until the runtime shuts
    /// down: connects, subscribes, sends, receives, and reconnects whenever the server goes.
    ///
    /// # Panics
    ///
    /// Panics on another core.
    pub async fn run<M: Member>(&self, rooms: Rooms<M>, config: BridgeConfig) {
        assert_eq!(
            coring::runtime::core_index(),
            self.core,
            "Bridge::run on another core than the one it was made for"
        );
        let mut link = Link {
            bridge: self.clone(),
            config,
            pending: VecDeque::new(),
            next_seq: HashMap::new(),
            seen: Rc::default(),
        };
        let mut backoff = link.config.reconnect_min;
        let mut lost_at = None;
        loop {
            let attempt = time::timeout(link.config.connect_timeout, link.open());
            let opened = match coring::runtime::until_shutdown(attempt).await {
                None => return,
                Some(Ok(Ok(opened))) => opened,
                Some(Ok(Err(e))) => {
                    tracing::debug!(error = %e, server = %link.config.server, "NATS bridge: connect failed");
                    None
                }
                Some(Err(_)) => None,
            };
            let Some((stream, reader, inbuf, max_payload)) = opened else {
                if coring::runtime::until_shutdown(time::sleep(backoff))
                    .await
                    .is_none()
                {
                    return;
                }
                backoff = (backoff * 2).min(link.config.reconnect_max);
                continue;
            };
            backoff = link.config.reconnect_min;
            let c = &self.counters;
            c.connects.fetch_add(1, Relaxed);
            c.connected.store(true, Relaxed);
            if let Some(at) = lost_at.take() {
                let away: Duration = time::now().saturating_duration_since(at);
                tracing::warn!(
                    away_ms = away.as_millis() as u64,
                    resent = link.pending.len(),
                    "NATS bridge reconnected: ours kept while away are sent now; what other \
                     processes published meanwhile is lost to us and counted as missed when \
                     their next message shows the gap"
                );
            }
            let stopped = coring::runtime::until_shutdown(link.serve(
                &rooms,
                stream,
                reader,
                inbuf,
                max_payload,
            ))
            .await;
            c.connected.store(false, Relaxed);
            if stopped.is_none() {
                return;
            }
            tracing::warn!(server = %link.config.server, "NATS bridge lost the server; reconnecting");
            lost_at = Some(time::now());
        }
    }
}

fn random_origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // The standard library's hasher keys come from the OS's randomness; the process id and
    // the time make two processes' ids differ even if that failed.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// What lasts across connections.
struct Link {
    bridge: Bridge,
    config: BridgeConfig,
    /// Encoded `PUB`s not yet known to have reached the server, oldest first.
    pending: VecDeque<Vec<u8>>,
    /// Our next sequence number per room.
    next_seq: HashMap<Arc<str>, u64>,
    /// The last sequence number seen per (process, room).
    seen: Rc<RefCell<HashMap<(u64, String), u64>>>,
}

/// Between the reader and the writer of one connection.
#[derive(Default)]
struct Wire {
    pongs: Cell<u32>,
    ended: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Wire {
    fn poke(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

type Opened = (Rc<TcpStream>, PooledReader, Vec<u8>, usize);

impl Link {
    /// Connects, reads `INFO`, sends `CONNECT`, `SUB` and a `PING`; `None` if the server said
    /// something else first.
    async fn open(&mut self) -> coring::Result<Option<Opened>> {
        let stream = TcpStream::connect(self.config.server).await?;
        let _ = stream.set_nodelay(true);
        let mut reader = stream.pooled();
        let mut inbuf = Vec::new();
        let info = loop {
            match nats::parse(&inbuf, 0) {
                Ok(Status::Complete(ServerOp::Info(json), n)) => {
                    let max = nats::max_payload(json).unwrap_or(1 << 20);
                    inbuf.drain(..n);
                    break max;
                }
                Ok(Status::Partial) => match reader.next().await? {
                    Some(buf) => inbuf.extend_from_slice(&buf),
                    None => return Ok(None),
                },
                Ok(Status::Complete(op, _)) => {
                    tracing::warn!(?op, "NATS server did not start with INFO");
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NATS server sent what we cannot read");
                    return Ok(None);
                }
            }
        };
        let mut hello = Vec::new();
        nats::connect(&mut hello, &self.config.name, false);
        nats::subscribe(&mut hello, &format!("{}.>", self.config.prefix), 1);
        nats::ping(&mut hello);
        let (result, _) = stream.write_all(hello).await;
        result?;
        Ok(Some((Rc::new(stream), reader, inbuf, info)))
    }

    /// Runs one connection until it fails: the reader publishes what arrives, this task
    /// writes what the cores hand over (and what was kept while the server was away).
    async fn serve<M: Member>(
        &mut self,
        rooms: &Rooms<M>,
        stream: Rc<TcpStream>,
        reader: PooledReader,
        inbuf: Vec<u8>,
        max_payload: usize,
    ) {
        let wire = Rc::new(Wire::default());
        let reading = coring::spawn_local(read_loop(
            reader,
            inbuf,
            rooms.clone(),
            Rc::clone(&wire),
            Rc::clone(&self.seen),
            self.bridge.clone(),
            self.config.prefix.clone(),
            max_payload,
        ));
        let mut batch: Vec<Vec<u8>> = Vec::new();
        loop {
            // What was kept goes first.
            batch.extend(self.pending.drain(..));
            if batch.is_empty() {
                let next = {
                    let mut recv = pin!(self.bridge.mail.recv());
                    poll_fn(|cx| {
                        if wire.ended.get() || wire.pongs.get() > 0 {
                            return Poll::Ready(None);
                        }
                        match recv.as_mut().poll(cx) {
                            Poll::Ready(m) => Poll::Ready(Some(m)),
                            Poll::Pending => {
                                wire.waker.set(Some(cx.waker().clone()));
                                Poll::Pending
                            }
                        }
                    })
                    .await
                };
                if let Some(m) = next {
                    self.encode(m, max_payload, &mut batch);
                }
            }
            while batch.len() < BATCH {
                let Some(m) = self.bridge.mail.try_recv() else {
                    break;
                };
                self.encode(m, max_payload, &mut batch);
            }
            if wire.ended.get() {
                self.keep(batch);
                break;
            }
            let mut out = Vec::new();
            for _ in 0..wire.pongs.replace(0) {
                nats::pong(&mut out);
            }
            for m in &batch {
                out.extend_from_slice(m);
            }
            if out.is_empty() {
                continue;
            }
            let (result, _) = stream.write_all(out).await;
            if result.is_err() {
                // Whether they arrived is unknown: they go again (the others drop duplicates).
                self.keep(batch);
                break;
            }
            self.bridge
                .counters
                .published
                .fetch_add(batch.len() as u64, Relaxed);
            batch.clear();
        }
        wire.ended.set(true);
        let _ = stream.shutdown(std::net::Shutdown::Both).await;
        let _ = reading.await;
    }

    /// Numbers a message for its room and encodes its `PUB`.
    fn encode(&mut self, m: Outgoing, max_payload: usize, batch: &mut Vec<Vec<u8>>) {
        if m.payload.len() + HEADER > max_payload {
            self.bridge.counters.dropped.fetch_add(1, Relaxed);
            return;
        }
        let seq = self.next_seq.entry(Arc::clone(&m.room)).or_insert(0);
        *seq += 1;
        let mut body = Vec::with_capacity(HEADER + m.payload.len());
        body.extend_from_slice(&self.bridge.origin.to_be_bytes());
        body.extend_from_slice(&seq.to_be_bytes());
        body.extend_from_slice(&m.payload);
        let subject = format!("{}.{}", self.config.prefix, encode_room(&m.room));
        let mut op = Vec::with_capacity(body.len() + subject.len() + 16);
        nats::publish(&mut op, &subject, &body);
        batch.push(op);
    }

    /// Keeps messages for the next connection, dropping the oldest past the bound.
    fn keep(&mut self, batch: Vec<Vec<u8>>) {
        for m in batch.into_iter().rev() {
            self.pending.push_front(m);
        }
        while self.pending.len() > self.config.buffer {
            self.pending.pop_front();
            self.bridge.counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Reads the server's operations: messages are published here, pings answered.
#[allow(clippy::too_many_arguments)]
async fn read_loop<M: Member>(
    mut reader: PooledReader,
    mut inbuf: Vec<u8>,
    rooms: Rooms<M>,
    wire: Rc<Wire>,
    seen: Rc<RefCell<HashMap<(u64, String), u64>>>,
    bridge: Bridge,
    prefix: String,
    max_payload: usize,
) {
    let c = &bridge.counters;
    'conn: loop {
        let mut used = 0;
        loop {
            match nats::parse(&inbuf[used..], max_payload) {
                Ok(Status::Complete(op, n)) => {
                    used += n;
                    match op {
                        ServerOp::Msg {
                            subject, payload, ..
                        } => {
                            let room = subject
                                .strip_prefix(prefix.as_str())
                                .and_then(|s| s.strip_prefix('.'))
                                .and_then(decode_room);
                            let (Some(room), true) = (room, payload.len() >= HEADER) else {
                                c.foreign.fetch_add(1, Relaxed);
                                continue;
                            };
                            let origin =
                                u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
                            let seq =
                                u64::from_be_bytes(payload[8..16].try_into().unwrap_or_default());
                            if origin == bridge.origin {
                                continue;
                            }
                            let mut seen = seen.borrow_mut();
                            let last = seen.entry((origin, room.clone())).or_insert(0);
                            if seq <= *last {
                                c.duplicates.fetch_add(1, Relaxed);
                                continue;
                            }
                            if *last > 0 && seq > *last + 1 {
                                let missed = seq - *last - 1;
                                c.missed.fetch_add(missed, Relaxed);
                                tracing::warn!(
                                    room = %room,
                                    origin = %format_args!("{origin:016x}"),
                                    missed,
                                    "NATS bridge missed messages of another process"
                                );
                            }
                            *last = seq;
                            drop(seen);
                            c.received.fetch_add(1, Relaxed);
                            rooms.publish(&room, Bytes::copy_from_slice(&payload[HEADER..]));
                        }
                        ServerOp::Ping => {
                            wire.pongs.set(wire.pongs.get() + 1);
                            wire.poke();
                        }
                        ServerOp::Err(e) => {
                            tracing::warn!(error = e, "NATS server error");
                        }
                        ServerOp::Info(_) | ServerOp::Pong | ServerOp::Ok => {}
                    }
                }
                Ok(Status::Partial) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS server sent what we cannot read; reconnecting");
                    break 'conn;
                }
            }
        }
        inbuf.drain(..used);
        if wire.ended.get() {
            break;
        }
        match reader.next().await {
            Ok(Some(buf)) => inbuf.extend_from_slice(&buf),
            _ => break,
        }
    }
    wire.ended.set(true);
    wire.poke();
}

/// A room's name as a subject token.
fn encode_room(room: &str) -> String {
    let mut out = String::with_capacity(room.len());
    for b in room.bytes() {
        if b <= b' ' || b >= 0x7f || b".*>%".contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// The room a subject token names; `None` if it is not one [`encode_room`] makes.
fn decode_room(token: &str) -> Option<String> {
    if token == "%00" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_round_trip_as_subject_tokens() {
        for room in ["lobby", "a.b", "x y", "100%", "*>", "", "é"] {
            let token = encode_room(room);
            assert!(
                crate::nats::valid_subject(&format!("rooms.{token}")),
                "{token}"
            );
            assert_eq!(decode_room(&token).as_deref(), Some(room));
        }
        assert_eq!(decode_room("%zz"), None);
    }
}
