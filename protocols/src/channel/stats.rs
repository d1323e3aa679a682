//! What a connection measures: RTT (smoothed, with variance, as RFC 6298 does for TCP), the
//! fraction of packets lost, and bytes per second each way.

use std::time::{Duration, Instant};

/// The retransmission timeout before any RTT sample.
const INITIAL_RTO: Duration = Duration::from_millis(200);
/// The retransmission timeout's floor and ceiling.
const MIN_RTO: Duration = Duration::from_millis(20);
const MAX_RTO: Duration = Duration::from_secs(2);
/// How much one settled packet moves the loss estimate.
const LOSS_WEIGHT: f64 = 1.0 / 32.0;
/// Bandwidth is measured over windows of this length.
const RATE_WINDOW: Duration = Duration::from_millis(500);

/// A snapshot of a connection's estimates and counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionStats {
    /// Smoothed round-trip time (zero before the first ack).
    pub rtt: Duration,
    /// Its mean deviation.
    pub rtt_variance: Duration,
    /// Fraction of packets lost, recent packets weighing most (each settled packet moves it
    /// 1/32 of the way to 0 or 1).
    pub packet_loss: f64,
    /// Bytes per second sent, over the last half-second window.
    pub sent_bandwidth: f64,
    /// Bytes per second received, over the last half-second window.
    pub received_bandwidth: f64,
    /// Packets written.
    pub packets_sent: u64,
    /// Packets read.
    pub packets_received: u64,
    /// Packets the peer acked.
    pub packets_acked: u64,
    /// Packets never acked.
    pub packets_lost: u64,
    /// Sequenced messages dropped because a newer one had been delivered.
    pub stale: u64,
    /// Fragmented unreliable messages dropped incomplete.
    pub incomplete: u64,
    /// Messages queued (reliable: until acked).
    pub queued: usize,
}

#[derive(Debug)]
pub(super) struct Estimates {
    srtt: Option<Duration>,
    rttvar: Duration,
    loss: f64,
    sent: Rate,
    received: Rate,
    packets_sent: u64,
    packets_received: u64,
    packets_acked: u64,
    packets_lost: u64,
    pub stale: u64,
    pub incomplete: u64,
}

impl Estimates {
    pub fn new(now: Instant) -> Self {
        Estimates {
            srtt: None,
            rttvar: Duration::ZERO,
            loss: 0.0,
            sent: Rate::new(now),
            received: Rate::new(now),
            packets_sent: 0,
            packets_received: 0,
            packets_acked: 0,
            packets_lost: 0,
            stale: 0,
            incomplete: 0,
        }
    }

    pub fn rto(&self) -> Duration {
        match self.srtt {
            None => INITIAL_RTO,
            Some(srtt) => (srtt + 4 * self.rttvar).clamp(MIN_RTO, MAX_RTO),
        }
    }

    pub fn sent(&mut self, now: Instant, bytes: usize) {
        self.packets_sent += 1;
        self.sent.add(now, bytes);
    }

    pub fn received(&mut self, now: Instant, bytes: usize) {
        self.packets_received += 1;
        self.received.add(now, bytes);
    }

    pub fn acked(&mut self, rtt: Duration) {
        self.packets_acked += 1;
        self.loss -= self.loss * LOSS_WEIGHT;
        self.srtt = Some(match self.srtt {
            None => {
                self.rttvar = rtt / 2;
                rtt
            }
            Some(srtt) => {
                let deviation = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + deviation) / 4;
                (srtt * 7 + rtt) / 8
            }
        });
    }

    /// A packet counted lost was acked after all.
    pub fn found(&mut self) {
        self.packets_lost = self.packets_lost.saturating_sub(1);
        self.packets_acked += 1;
        self.loss = (self.loss - LOSS_WEIGHT).max(0.0);
    }

    pub fn lost(&mut self, _bytes: usize) {
        self.packets_lost += 1;
        self.loss += (1.0 - self.loss) * LOSS_WEIGHT;
    }

    pub fn snapshot(&self, now: Instant) -> ConnectionStats {
        ConnectionStats {
            rtt: self.srtt.unwrap_or_default(),
            rtt_variance: self.rttvar,
            packet_loss: self.loss,
            sent_bandwidth: self.sent.rate(now),
            received_bandwidth: self.received.rate(now),
            packets_sent: self.packets_sent,
            packets_received: self.packets_received,
            packets_acked: self.packets_acked,
            packets_lost: self.packets_lost,
            stale: self.stale,
            incomplete: self.incomplete,
            queued: 0,
        }
    }
}

/// Bytes per second over fixed windows: the last complete window's rate.
#[derive(Debug)]
struct Rate {
    start: Instant,
    bytes: usize,
    per_second: f64,
}

impl Rate {
    fn new(now: Instant) -> Self {
        Rate {
            start: now,
            bytes: 0,
            per_second: 0.0,
        }
    }

    fn add(&mut self, now: Instant, bytes: usize) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= RATE_WINDOW {
            self.per_second = self.bytes as f64 / elapsed.as_secs_f64();
            self.start = now;
            self.bytes = 0;
        }
        self.bytes += bytes;
    }

    /// The last complete window's rate; once the current window has run its length without
    /// closing (nothing sent since), the current window's.
    fn rate(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= RATE_WINDOW {
            self.bytes as f64 / elapsed.as_secs_f64()
        } else {
            self.per_second
        }
    }
}
