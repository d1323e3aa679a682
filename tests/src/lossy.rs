//! A user-space UDP proxy that loses, delays, duplicates and reorders datagrams as asked (the
//! machines here have no netem qdisc). Deterministic: the same seed drops the same datagrams.
//!
//! The proxy listens on one loopback port; the first source to send to it is "the client",
//! whose datagrams go to the upstream address, and upstream's replies go back to the client.
//! Each direction gets the same faults. Its timing resolution is the 200 µs nap it takes when
//! idle, which needs an OS that sleeps that briefly (Linux, macOS; not Windows' timer ticks).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to each datagram.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Fraction of datagrams dropped, `0.0..=1.0`.
    pub loss: f64,
    /// Added to every datagram's trip.
    pub delay: Duration,
    /// Up to this much more, uniformly, per datagram (so later ones may overtake earlier ones:
    /// reordering).
    pub jitter: Duration,
    /// Fraction of datagrams sent twice.
    pub duplicate: f64,
    /// Seed of the fault sequence.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            seed: 1,
        }
    }
}

/// What went through, per direction and in all.
#[derive(Debug, Default)]
pub struct Counts {
    /// Datagrams received by the proxy.
    pub received: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
    /// Datagrams sent on (duplicates included).
    pub forwarded: AtomicU64,
}

/// A running proxy; stops and joins its thread when dropped.
#[derive(Debug)]
pub struct LossyUdpProxy {
    /// Where clients send.
    pub addr: SocketAddr,
    /// What the proxy did so far.
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LossyUdpProxy {
    /// Starts a proxy on a free loopback port in front of `upstream`.
    ///
    /// # Panics
    ///
    /// When no loopback socket can be bound.
    pub fn start(upstream: SocketAddr, faults: Faults) -> LossyUdpProxy {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind the proxy's front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind the proxy's back");
        front.set_nonblocking(true).expect("non-blocking");
        back.set_nonblocking(true).expect("non-blocking");
        let addr = front.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&counts), Arc::clone(&stop));
        let thread = std::thread::spawn(move || run(&front, &back, upstream, faults, &c, &s));
        LossyUdpProxy {
            addr,
            counts,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LossyUdpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// xorshift64*: the fault sequence.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A datagram waiting for its time: (due, sequence for a stable order, to the client?, bytes).
type Pending = Reverse<(Instant, u64, bool, Vec<u8>)>;

fn run(
    front: &UdpSocket,
    back: &UdpSocket,
    upstream: SocketAddr,
    faults: Faults,
    counts: &Counts,
    stop: &AtomicBool,
) {
    let mut rng = Rng(faults.seed.max(1));
    let mut client: Option<SocketAddr> = None;
    let mut queue: BinaryHeap<Pending> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Acquire) {
        let mut idle = true;
        for (socket, to_client) in [(front, false), (back, true)] {
            // Everything already queued on this side, so the kernel's buffer never overflows.
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                idle = false;
                if !to_client {
                    client.get_or_insert(from);
                }
                counts.received.fetch_add(1, Ordering::Relaxed);
                if rng.unit() < faults.loss {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let copies = if rng.unit() < faults.duplicate { 2 } else { 1 };
                for _ in 0..copies {
                    let jitter = faults.jitter.mul_f64(rng.unit());
                    let due = Instant::now() + faults.delay + jitter;
                    seq += 1;
                    queue.push(Reverse((due, seq, to_client, buf[..n].to_vec())));
                }
            }
        }
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse((due, ..))| *due <= now) {
            let Some(Reverse((_, _, to_client, bytes))) = queue.pop() else {
                break;
            };
            let sent = match (to_client, client) {
                (true, Some(c)) => front.send_to(&bytes, c),
                (false, _) => back.send_to(&bytes, upstream),
                (true, None) => continue,
            };
            if sent.is_ok() {
                counts.forwarded.fetch_add(1, Ordering::Relaxed);
            }
        }
        if idle {
            // Nothing arrived: nap until the next datagram is due, at most 200 µs.
            let nap = queue
                .peek()
                .map_or(IDLE_NAP, |Reverse((due, ..))| {
                    due.saturating_duration_since(now)
                })
                .min(IDLE_NAP);
            std::thread::sleep(nap);
        }
    }
}

/// The longest the proxy sleeps with nothing to do (its timing resolution when idle).
const IDLE_NAP: Duration = Duration::from_micros(200);
