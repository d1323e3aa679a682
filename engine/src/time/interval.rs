//! Fixed-rate ticks that do not drift.
//!
//! Tick `k` is due at `start + k * period`, computed from the start, never from when the
//! previous tick was handled, so a 60 Hz game loop keeps 60 ticks per second however long each
//! tick takes (as long as it keeps up on average). A tick that fires late says so
//! ([`Tick::lateness`]); ticks that were missed entirely are either delivered back to back
//! ([`MissedTicks::Burst`], the default: every tick happens) or skipped and counted
//! ([`MissedTicks::Skip`]); they are never silently merged.

use std::time::{Duration, Instant};

use super::{Sleep, now, sleep_until};

/// What to do with ticks whose time passed while the previous tick was still being handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissedTicks {
    /// Deliver each missed tick at once, one per `tick()` call, until caught up.
    #[default]
    Burst,
    /// Skip to the next tick that is not yet due and report how many were skipped.
    Skip,
}

/// One tick of an [`Interval`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// The tick's number: 0 for the first.
    pub index: u64,
    /// When it was due (`start + index * period`).
    pub scheduled: Instant,
    /// When it was delivered (the core's clock for that turn).
    pub fired: Instant,
    /// Ticks skipped just before this one ([`MissedTicks::Skip`] only).
    pub skipped: u64,
}

impl Tick {
    /// How late the tick was delivered.
    pub fn lateness(&self) -> Duration {
        self.fired.saturating_duration_since(self.scheduled)
    }
}

/// Ticks at a fixed rate; see the module docs.
#[derive(Debug)]
pub struct Interval {
    start: Instant,
    period: Duration,
    next_index: u64,
    missed: MissedTicks,
    sleep: Sleep,
}

/// Ticks every `period`, the first one right away.
///
/// # Panics
///
/// Panics if `period` is zero.
pub fn interval(period: Duration) -> Interval {
    interval_at(now(), period)
}

/// Ticks every `period`, the first one at `start`.
///
/// # Panics
///
/// Panics if `period` is zero.
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    Interval {
        start,
        period,
        next_index: 0,
        missed: MissedTicks::default(),
        sleep: sleep_until(start),
    }
}

impl Interval {
    /// Chooses how missed ticks are handled.
    pub fn set_missed_ticks(&mut self, missed: MissedTicks) {
        self.missed = missed;
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) -> Tick {
        let mut skipped = 0;
        if self.missed == MissedTicks::Skip {
            let clock = now();
            if clock >= self.due(self.next_index + 1) {
                // More than a whole period behind: jump to the latest tick already due and
                // count the ones in between.
                let behind = clock.duration_since(self.start).as_nanos() / self.period.as_nanos();
                let latest = u64::try_from(behind).unwrap_or(u64::MAX);
                skipped = latest - self.next_index;
                self.next_index = latest;
            }
        }
        let scheduled = self.due(self.next_index);
        self.sleep.reset(scheduled);
        (&mut self.sleep).await;
        let tick = Tick {
            index: self.next_index,
            scheduled,
            fired: now(),
            skipped,
        };
        self.next_index += 1;
        tick
    }

    fn due(&self, index: u64) -> Instant {
        let nanos = self.period.as_nanos().saturating_mul(u128::from(index));
        self.start + Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }
}
