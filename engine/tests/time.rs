//! Timers with tolerances that hold on a shared, noisy machine: lower bounds are exact (a timer
//! never fires early), upper bounds are generous.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::time::{self, MissedTicks, interval, sleep, sleep_until, timeout};

#[coring::test]
fn sleep_never_fires_early() {
    coring::block_on(async {
        for ms in [1u64, 5, 20, 50] {
            let start = Instant::now();
            sleep(Duration::from_millis(ms)).await;
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(ms), "{ms} ms took {took:?}");
            assert!(
                took < Duration::from_millis(ms + 500),
                "{ms} ms took {took:?}"
            );
        }
    });
}

#[coring::test]
fn many_sleeps_fire_in_deadline_order() {
    coring::block_on(async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let base = time::now();
        let mut handles = Vec::new();
        for i in (0..50u64).rev() {
            let order = order.clone();
            handles.push(coring::spawn_local(async move {
                // 50 ms of head room: every task is first polled before any deadline passes,
                // even on a loaded machine (a deadline already past completes at first poll, in
                // spawn order, which is the reverse here).
                sleep_until(base + Duration::from_millis(2 * i + 50)).await;
                order.borrow_mut().push(i);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*order.borrow(), (0..50).collect::<Vec<_>>());
    });
}

#[coring::test]
fn timeout_passes_output_through_or_elapses() {
    coring::block_on(async {
        let quick = timeout(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(quick, Ok(7));
        let start = Instant::now();
        let slow = timeout(Duration::from_millis(30), sleep(Duration::from_secs(30))).await;
        assert!(slow.is_err());
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(start.elapsed() < Duration::from_secs(5));
        let err: coring::Error = slow.unwrap_err().into();
        assert_eq!(err.kind(), coring::ErrorKind::TimedOut);
    });
}

#[coring::test]
fn timeout_of_zero_still_sees_a_ready_future() {
    coring::block_on(async {
        assert_eq!(timeout(Duration::ZERO, async { 1 }).await, Ok(1));
    });
}

#[coring::test]
fn now_is_cached_within_a_turn_and_advances_across_turns() {
    coring::block_on(async {
        let a = time::now();
        // Burn real time without yielding: the cached clock must not move.
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(5) {}
        assert_eq!(time::now(), a);
        sleep(Duration::from_millis(1)).await;
        assert!(time::now() > a);
    });
}

#[coring::test]
fn interval_at_60hz_keeps_the_rate_without_drift() {
    coring::block_on(async {
        let period = Duration::from_nanos(1_000_000_000 / 60);
        let mut ticker = interval(period);
        let start = time::now();
        let mut last = None;
        for expected in 0..120u64 {
            let tick = ticker.tick().await;
            assert_eq!(tick.index, expected);
            assert!(tick.fired >= tick.scheduled, "fired early");
            // The schedule is absolute: tick k is due at start + k * period.
            assert_eq!(tick.scheduled, start + period * expected as u32);
            // Simulated work that varies per tick.
            let work = Instant::now();
            while work.elapsed() < Duration::from_micros(500 * (expected % 5)) {}
            last = Some(tick);
        }
        let last = last.unwrap();
        let elapsed = last.fired - start;
        // 120 ticks at 60 Hz: tick 119 is due at 1.983 s; never earlier, and a noisy machine
        // gets generous slack above.
        assert!(elapsed >= period * 119, "{elapsed:?}");
        assert!(
            elapsed < period * 119 + Duration::from_millis(500),
            "{elapsed:?}"
        );
    });
}

#[coring::test]
fn late_ticks_are_reported_in_burst_mode() {
    coring::block_on(async {
        let period = Duration::from_millis(10);
        let mut ticker = interval(period);
        let first = ticker.tick().await;
        // Block the core for ~5 periods.
        let block = Instant::now();
        while block.elapsed() < Duration::from_millis(55) {}
        coring::task::yield_now().await;
        let mut late = Vec::new();
        for _ in 0..5 {
            let t = ticker.tick().await;
            assert_eq!(t.skipped, 0);
            late.push(t);
        }
        // Every missed tick is delivered, each marked late; none merged away.
        assert_eq!(
            late.iter().map(|t| t.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert!(
            late[0].lateness() >= Duration::from_millis(30),
            "{:?}",
            late[0]
        );
        assert_eq!(late[0].scheduled, first.scheduled + period);
    });
}

#[coring::test]
fn skipped_ticks_are_counted_in_skip_mode() {
    coring::block_on(async {
        let period = Duration::from_millis(10);
        let mut ticker = interval(period);
        ticker.set_missed_ticks(MissedTicks::Skip);
        ticker.tick().await;
        let block = Instant::now();
        while block.elapsed() < Duration::from_millis(55) {}
        coring::task::yield_now().await;
        let t = ticker.tick().await;
        assert!(t.skipped >= 3, "{t:?}");
        assert_eq!(t.index, 1 + t.skipped);
        assert!(t.lateness() < period * 2, "{t:?}");
        let next = ticker.tick().await;
        assert_eq!(next.index, t.index + 1);
        assert_eq!(next.skipped, 0);
    });
}
