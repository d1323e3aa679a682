//! A fixed-rate tick loop that keeps account of itself.
//!
//! [`TickLoop`] runs on [`coring::time::interval`] (each tick due at `start + k × period`, so
//! the rate never drifts) and records, for every tick, how late it started and how long its
//! work took, in microsecond histograms ([`TickStats`]). A tick whose work takes longer than
//! the period is an overrun: counted, and the ticks it delayed are delivered back to back and
//! counted late, never merged into one.
//!
//! ```no_run
//! use coring_protocols::tick::TickLoop;
//!
//! coring::Runtime::builder().build()?.run(|_core| async {
//!     let mut ticks = TickLoop::hz(60);
//!     for _ in 0..600 {
//!         let tick = ticks.next().await;
//!         // Simulate the world for tick.index, broadcast the snapshot.
//!         let _ = tick;
//!     }
//!     let stats = ticks.stats();
//!     println!("p99 lateness {} µs, overruns {}", stats.lateness_us(0.99), stats.overruns);
//! })?;
//! # Ok::<(), coring::Error>(())
//! ```

use std::time::{Duration, Instant};

use coring::time::{Interval, Tick, interval};
use hdrhistogram::Histogram;

/// Ticks at a fixed rate, recording lateness and work per tick.
#[derive(Debug)]
pub struct TickLoop {
    interval: Interval,
    /// The tick being worked on: when it was delivered.
    current: Option<Instant>,
    stats: TickStats,
}

/// What a [`TickLoop`] recorded.
#[derive(Debug, Clone)]
pub struct TickStats {
    /// The period.
    pub period: Duration,
    /// Ticks delivered.
    pub ticks: u64,
    /// Ticks whose work took longer than the period.
    pub overruns: u64,
    /// Ticks that started a whole period or more after they were due (delivered back to back
    /// after an overrun or a stall).
    pub late: u64,
    /// The longest a tick's work took.
    pub max_work: Duration,
    lateness: Histogram<u64>,
    work: Histogram<u64>,
}

/// Microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn histogram() -> Histogram<u64> {
    // 1 µs to an hour at 3 significant digits: bounds that cannot fail.
    match Histogram::new_with_bounds(1, 3_600_000_000, 3) {
        Ok(h) => h,
        Err(_) => unreachable!("constant histogram bounds are valid"),
    }
}

impl TickStats {
    fn new(period: Duration) -> TickStats {
        TickStats {
            period,
            ticks: 0,
            overruns: 0,
            late: 0,
            max_work: Duration::ZERO,
            lateness: histogram(),
            work: histogram(),
        }
    }

    /// The `q` quantile (0.0 to 1.0) of how late ticks started, in microseconds.
    pub fn lateness_us(&self, q: f64) -> u64 {
        self.lateness.value_at_quantile(q)
    }

    /// The `q` quantile of how long ticks' work took, in microseconds.
    pub fn work_us(&self, q: f64) -> u64 {
        self.work.value_at_quantile(q)
    }

    /// The lateness histogram (microseconds).
    pub fn lateness(&self) -> &Histogram<u64> {
        &self.lateness
    }

    /// The work histogram (microseconds).
    pub fn work(&self) -> &Histogram<u64> {
        &self.work
    }
}

impl TickLoop {
    /// `hz` ticks a second, the first at once.
    ///
    /// # Panics
    ///
    /// Panics if `hz` is 0, or off a coring core.
    pub fn hz(hz: u32) -> TickLoop {
        assert!(hz > 0, "a tick rate must be at least 1 Hz");
        TickLoop::every(Duration::from_nanos(1_000_000_000 / u64::from(hz)))
    }

    /// A tick every `period`, the first at once.
    ///
    /// # Panics
    ///
    /// Panics if `period` is zero, or off a coring core.
    pub fn every(period: Duration) -> TickLoop {
        TickLoop {
            interval: interval(period),
            current: None,
            stats: TickStats::new(period),
        }
    }

    /// Ends the tick being worked on (its work is recorded) and waits for the next one.
    pub async fn next(&mut self) -> Tick {
        self.finish();
        let tick = self.interval.tick().await;
        // The clock now, not the turn's: lateness includes the time other tasks took in this
        // turn before this one ran.
        let started = Instant::now().max(tick.fired);
        let late = started.saturating_duration_since(tick.scheduled);
        let s = &mut self.stats;
        s.ticks += 1;
        s.lateness.saturating_record(micros(late));
        if late >= s.period {
            s.late += 1;
        }
        self.current = Some(started);
        Tick {
            fired: started,
            ..tick
        }
    }

    /// Records the current tick's work as done now (called by [`TickLoop::next`]; call it
    /// yourself when the loop is about to stop).
    pub fn finish(&mut self) {
        let Some(started) = self.current.take() else {
            return;
        };
        let work = started.elapsed();
        let s = &mut self.stats;
        s.work.saturating_record(micros(work));
        s.max_work = s.max_work.max(work);
        if work > s.period {
            s.overruns += 1;
        }
    }

    /// What was recorded so far.
    pub fn stats(&self) -> &TickStats {
        &self.stats
    }
}
