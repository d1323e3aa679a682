//! The `udp-echo` workload: datagrams sent at a fixed rate to a server that sends each back.
//!
//! Each datagram carries its socket's number and a sequence number, so every reply is matched
//! to the moment it was due to leave (its latency), and loss, reordering and duplication are
//! counted exactly. The rest of the datagram is a pattern the reply must repeat.

use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring::net::UdpSocket;
use coring::time::{sleep_until, timeout_at};

use crate::record::Recorder;
use crate::run::{CoreRun, Lane, Schedule, Workload};
use crate::stream::error_kind;

/// Bytes of the header: socket number (u32) and sequence number (u64), little-endian.
pub const HEADER: usize = 12;

/// Datagrams sent in one go when the schedule has fallen behind.
const BURST: usize = 64;

/// The `udp-echo` workload, ready to run.
#[derive(Debug)]
pub struct UdpEcho {
    addr: SocketAddr,
    target: String,
    size: usize,
}

impl UdpEcho {
    /// Echo of `size`-byte datagrams to `target`.
    pub fn new(target: &str, size: usize) -> Result<UdpEcho, String> {
        if !(HEADER..=65_507).contains(&size) {
            return Err(format!("--size must be between {HEADER} and 65507 bytes"));
        }
        let addr = crate::run::resolve(target, target)?;
        Ok(UdpEcho {
            addr,
            target: target.to_owned(),
            size,
        })
    }
}

/// The datagram (or payload) connection `lane` sends, `size` bytes: its number, room for the
/// sequence number, then a pattern the echo must repeat.
pub(crate) fn template(lane: usize, size: usize) -> Vec<u8> {
    let mut template = vec![0u8; size];
    template[..4].copy_from_slice(&(lane as u32).to_le_bytes());
    for (i, b) in template[HEADER..].iter_mut().enumerate() {
        *b = (i.wrapping_mul(31).wrapping_add(lane) % 251) as u8;
    }
    template
}

/// One connection's echoes, matched to their intended send times: loss, reordering and
/// duplication counted exactly (what `udp-echo` and `netcode` share).
pub(crate) struct Echoes<'a> {
    template: &'a [u8],
    first: Instant,
    seen: Vec<u64>,
    highest: Option<u64>,
}

impl<'a> Echoes<'a> {
    pub(crate) fn new(template: &'a [u8], first: Instant) -> Self {
        Echoes {
            template,
            first,
            seen: Vec::new(),
            highest: None,
        }
    }

    /// Checks and records one echo that arrived at `now`; whether it counted as a new answer
    /// (for progress). `what` names the unit in error kinds (`datagram`, `payload`).
    pub(crate) fn take(
        &mut self,
        rec: &mut Recorder,
        schedule: &Schedule,
        data: &[u8],
        now: Instant,
        what: Unit,
    ) -> bool {
        let template = self.template;
        if data.len() != template.len() {
            rec.error(what.size_error());
            return false;
        }
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&data[4..HEADER]);
        let seq = u64::from_le_bytes(seq_bytes);
        if data[..4] != template[..4] || data[HEADER..] != template[HEADER..] {
            rec.error(what.corrupt_error());
            return false;
        }
        let Ok(n) = u32::try_from(seq) else {
            rec.error(what.corrupt_error());
            return false;
        };
        let intended = self.first + schedule.interval() * n;
        if intended > now {
            // A sequence number not sent yet.
            rec.error(what.corrupt_error());
            return false;
        }
        let (word, bit) = (seq as usize / 64, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            if rec.measuring(intended) {
                rec.datagrams.duplicated += 1;
            }
            return false;
        }
        self.seen[word] |= 1 << bit;
        let measured = rec.measuring(intended);
        if self.highest.is_some_and(|h| seq < h) {
            if measured {
                rec.datagrams.reordered += 1;
            }
        } else {
            self.highest = Some(seq);
        }
        if measured {
            rec.datagrams.received += 1;
            rec.bytes_in(data.len(), intended);
            rec.complete_sent(intended, now);
        }
        true
    }
}

/// What an echo is, for its error kinds.
#[derive(Clone, Copy)]
pub(crate) enum Unit {
    Datagram,
    Payload,
}

impl Unit {
    fn size_error(self) -> &'static str {
        match self {
            Unit::Datagram => "datagram_size",
            Unit::Payload => "payload_size",
        }
    }

    fn corrupt_error(self) -> &'static str {
        match self {
            Unit::Datagram => "datagram_corrupt",
            Unit::Payload => "payload_corrupt",
        }
    }
}

impl Workload for UdpEcho {
    fn kind(&self) -> &'static str {
        "udp-echo"
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    fn connection(self: Arc<Self>, lane: Lane) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move { self.socket(lane).await })
    }
}

impl UdpEcho {
    async fn socket(&self, lane: Lane) {
        let run = Rc::clone(&lane.run);
        let Some(schedule) = lane.schedule.clone() else {
            run.rec.borrow_mut().error("udp_needs_rate");
            return;
        };
        let local = if self.addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = match UdpSocket::bind(local).and_then(|s| s.connect(self.addr).map(|()| s)) {
            Ok(s) => Rc::new(s),
            Err(e) => {
                run.rec.borrow_mut().error(error_kind(&e));
                return;
            }
        };
        let first = schedule.next();
        let template = template(lane.index, self.size);
        let sender = coring::spawn_local(send_loop(
            Rc::clone(&socket),
            Rc::clone(&run),
            Rc::clone(&schedule),
            template.clone(),
        ))
        .cancel_on_drop();
        receive_loop(&socket, &run, &schedule, first, &template).await;
        drop(sender);
    }
}

async fn send_loop(
    socket: Rc<UdpSocket>,
    run: Rc<CoreRun>,
    schedule: Rc<Schedule>,
    mut dgram: Vec<u8>,
) {
    let mut seq: u64 = 0;
    while let Some(due) = next_due(&run, &schedule).await {
        for _ in 0..due {
            let t = schedule.pop();
            dgram[4..HEADER].copy_from_slice(&seq.to_le_bytes());
            seq += 1;
            let (result, back) = socket.send(dgram).await;
            dgram = back;
            record_sent(&run, t, dgram.len(), result);
        }
    }
}

/// How many sends are due now (at most a burst), waiting for the schedule's next one if none
/// is; `None` once sending stops.
pub(crate) async fn next_due(run: &CoreRun, schedule: &Schedule) -> Option<usize> {
    loop {
        let now = Instant::now();
        if run.stop_sending(now) {
            return None;
        }
        let due = schedule.due(now).min(BURST);
        if due > 0 {
            return Some(due);
        }
        sleep_until(schedule.next().min(run.send_until)).await;
    }
}

/// Counts one datagram of `len` bytes due at `t` as sent, or its error.
pub(crate) fn record_sent(run: &CoreRun, t: Instant, len: usize, result: coring::Result<usize>) {
    let mut rec = run.rec.borrow_mut();
    if rec.measuring(t) {
        rec.datagrams.sent += 1;
        rec.bytes_out(len, t);
    }
    if let Err(e) = result {
        rec.error(error_kind(&e));
    }
}

async fn receive_loop(
    socket: &UdpSocket,
    run: &CoreRun,
    schedule: &Schedule,
    first: Instant,
    template: &[u8],
) {
    // Replies still on their way when sending stops get this long to arrive.
    let grace = run.options.timeout.min(Duration::from_secs(1));
    let until = run.send_until + grace;
    let mut pooled = socket.pooled();
    let mut echoes = Echoes::new(template, first);
    loop {
        let received = match timeout_at(until, pooled.next()).await {
            Err(_) => return,
            Ok(r) => r,
        };
        let now = Instant::now();
        let dgram = match received {
            Ok(d) => d,
            Err(e) => {
                // ICMP errors (port unreachable: ECONNREFUSED) arrive here, one per datagram.
                run.rec.borrow_mut().error(error_kind(&e));
                continue;
            }
        };
        let mut rec = run.rec.borrow_mut();
        if dgram.truncated {
            rec.error(Unit::Datagram.size_error());
            continue;
        }
        let counted = echoes.take(
            &mut rec,
            schedule,
            dgram.data.as_slice(),
            now,
            Unit::Datagram,
        );
        drop(rec);
        if counted {
            run.progress(1);
        }
    }
}
