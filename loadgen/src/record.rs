//! What one core saw: latencies, counts, errors and a per-second timeline, merged at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Lowest and highest recordable latency, in microseconds (1 µs to 60 s).
pub const LOWEST_US: u64 = 1;
/// See [`LOWEST_US`].
pub const HIGHEST_US: u64 = 60_000_000;
/// Significant digits of the latency histogram.
pub const SIGFIG: u8 = 3;
/// Significant digits of the per-second histograms behind the timeline's p99 (they are many).
const TIMELINE_SIGFIG: u8 = 2;

/// A latency histogram with the loadgen's bounds.
pub fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, sigfig).expect("valid histogram bounds")
}

/// One second of the measured period.
#[derive(Clone, Debug)]
pub struct Second {
    /// Responses completed in it.
    pub requests: u64,
    /// Latencies of those responses.
    pub latency: Histogram<u64>,
}

/// Error counts by kind (`reset`, `timeout`, `status_503`, …).
pub type Errors = BTreeMap<String, u64>;

/// Figures of one core, or of all cores once merged.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Start of the measured period (after warm-up).
    pub measure_from: Instant,
    /// End of the measured period; completions after it are not counted.
    pub measure_to: Instant,
    /// Latency of every response completed in the measured period.
    pub latency: Histogram<u64>,
    /// Responses completed in the measured period.
    pub requests: u64,
    /// Bytes received in the measured period.
    pub bytes_in: u64,
    /// Bytes sent in the measured period.
    pub bytes_out: u64,
    /// Errors by kind, over the whole run (warm-up included: an error is never hidden).
    pub errors: Errors,
    /// Requests written whose answer never came because their connection failed or closed.
    pub dropped: u64,
    /// Time of the last counted completion (ends a run bounded by a request count).
    pub last_completion: Option<Instant>,
    /// The timeline, one entry per second of the measured period.
    pub timeline: Vec<Second>,
    /// UDP only: datagrams sent, received, received out of order, and received twice.
    pub datagrams: Datagrams,
}

/// Datagram accounting of the UDP workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Datagrams {
    /// Sent in the measured period.
    pub sent: u64,
    /// Of those, received back.
    pub received: u64,
    /// Received after a datagram sent later than them.
    pub reordered: u64,
    /// Received more than once.
    pub duplicated: u64,
}

impl Recorder {
    /// An empty recorder for the period `[measure_from, measure_to]`.
    pub fn new(measure_from: Instant, measure_to: Instant) -> Recorder {
        Recorder {
            measure_from,
            measure_to,
            latency: histogram(SIGFIG),
            requests: 0,
            bytes_in: 0,
            bytes_out: 0,
            errors: Errors::new(),
            dropped: 0,
            last_completion: None,
            timeline: Vec::new(),
            datagrams: Datagrams::default(),
        }
    }

    /// Whether `at` falls in the measured period.
    pub fn measuring(&self, at: Instant) -> bool {
        at >= self.measure_from && at <= self.measure_to
    }

    /// Records a response completed at `done` for a request that started (was written, or was
    /// due to be written in the open model) at `start`.
    pub fn complete(&mut self, start: Instant, done: Instant) {
        if self.measuring(done) {
            self.count(start, done);
        }
    }

    /// Records a reply to a datagram sent (or due) at `start` in the measured period, whenever
    /// the reply came: datagrams are accounted by when they left, so that loss adds up.
    pub fn complete_sent(&mut self, start: Instant, done: Instant) {
        if self.measuring(start) {
            self.count(start, done);
        }
    }

    fn count(&mut self, start: Instant, done: Instant) {
        let us = micros(done.saturating_duration_since(start));
        self.latency.saturating_record(us);
        self.requests += 1;
        self.last_completion = Some(done);
        let second = done.saturating_duration_since(self.measure_from).as_secs() as usize;
        while self.timeline.len() <= second {
            self.timeline.push(Second {
                requests: 0,
                latency: histogram(TIMELINE_SIGFIG),
            });
        }
        let s = &mut self.timeline[second];
        s.requests += 1;
        s.latency.saturating_record(us);
    }

    /// Counts `n` bytes received at `at`.
    pub fn bytes_in(&mut self, n: usize, at: Instant) {
        if self.measuring(at) {
            self.bytes_in += n as u64;
        }
    }

    /// Counts `n` bytes sent at `at`.
    pub fn bytes_out(&mut self, n: usize, at: Instant) {
        if self.measuring(at) {
            self.bytes_out += n as u64;
        }
    }

    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: &str) {
        match self.errors.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(kind.to_owned(), 1);
            }
        }
    }

    /// Adds another core's figures to these.
    pub fn merge(&mut self, other: &Recorder) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.requests += other.requests;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.dropped += other.dropped;
        self.last_completion = self.last_completion.max(other.last_completion);
        for (i, s) in other.timeline.iter().enumerate() {
            if self.timeline.len() <= i {
                self.timeline.push(Second {
                    requests: 0,
                    latency: histogram(TIMELINE_SIGFIG),
                });
            }
            let mine = &mut self.timeline[i];
            mine.requests += s.requests;
            mine.latency
                .add(&s.latency)
                .expect("histograms share bounds");
        }
        let d = &mut self.datagrams;
        d.sent += other.datagrams.sent;
        d.received += other.datagrams.received;
        d.reordered += other.datagrams.reordered;
        d.duplicated += other.datagrams.duplicated;
    }
}

/// `d` in whole microseconds, at least 1 (the histogram's floor).
pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(LOWEST_US)
}
