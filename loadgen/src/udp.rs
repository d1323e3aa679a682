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

/// Payload byte `i` of socket `lane`'s datagrams.
fn filler(lane: usize, i: usize) -> u8 {
    (i.wrapping_mul(31).wrapping_add(lane) % 251) as u8
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
        let mut template = vec![0u8; self.size];
        template[..4].copy_from_slice(&(lane.index as u32).to_le_bytes());
        for (i, b) in template[HEADER..].iter_mut().enumerate() {
            *b = filler(lane.index, i);
        }
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
    loop {
        let now = Instant::now();
        if run.stop_sending(now) {
            return;
        }
        let due = schedule.due(now).min(BURST);
        if due == 0 {
            sleep_until(schedule.next().min(run.send_until)).await;
            continue;
        }
        for _ in 0..due {
            let t = schedule.pop();
            dgram[4..HEADER].copy_from_slice(&seq.to_le_bytes());
            seq += 1;
            let (result, back) = socket.send(dgram).await;
            dgram = back;
            let mut rec = run.rec.borrow_mut();
            if rec.measuring(t) {
                rec.datagrams.sent += 1;
                rec.bytes_out(dgram.len(), t);
            }
            if let Err(e) = result {
                rec.error(error_kind(&e));
            }
        }
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
    let mut seen: Vec<u64> = Vec::new();
    let mut highest: Option<u64> = None;
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
        let data = dgram.data.as_slice();
        let mut rec = run.rec.borrow_mut();
        if dgram.truncated || data.len() != template.len() {
            rec.error("datagram_size");
            continue;
        }
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&data[4..HEADER]);
        let seq = u64::from_le_bytes(seq_bytes);
        if data[..4] != template[..4] || data[HEADER..] != template[HEADER..] {
            rec.error("datagram_corrupt");
            continue;
        }
        let Ok(n) = u32::try_from(seq) else {
            rec.error("datagram_corrupt");
            continue;
        };
        let intended = first + schedule.interval() * n;
        if intended > now {
            // A sequence number not sent yet.
            rec.error("datagram_corrupt");
            continue;
        }
        let (word, bit) = (seq as usize / 64, seq % 64);
        if seen.len() <= word {
            seen.resize(word + 1, 0);
        }
        if seen[word] & (1 << bit) != 0 {
            if rec.measuring(intended) {
                rec.datagrams.duplicated += 1;
            }
            continue;
        }
        seen[word] |= 1 << bit;
        let measured = rec.measuring(intended);
        if highest.is_some_and(|h| seq < h) {
            if measured {
                rec.datagrams.reordered += 1;
            }
        } else {
            highest = Some(seq);
        }
        if measured {
            rec.datagrams.received += 1;
            rec.bytes_in(data.len(), intended);
            rec.complete_sent(intended, now);
        }
        drop(rec);
        run.progress(1);
    }
}
