//! Wake-up coalescing (`Builder::coalesce_wakeups`, io_uring min-wait): in effect only where
//! the kernel has it; datagrams that arrive while a core sleeps share its wake-ups; and the
//! window never delays what should not wait for it: a timer due sooner fires on time, and the
//! first arrival after a quiet window wakes the core at once.

use std::time::{Duration, Instant};

use coring::driver::probe::DriverKind;
use coring::net::UdpSocket;

const WINDOW: Duration = Duration::from_millis(300);

fn runtime() -> coring::Runtime {
    coring::Runtime::builder()
        .coalesce_wakeups(Some(WINDOW))
        .build()
        .unwrap()
}

/// Whether the kernel release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (next(), next()) >= (major, minor)
}

#[coring::test]
fn coalescing_is_in_effect_where_the_kernel_has_min_wait() {
    let rt = runtime();
    let uring = rt.driver_kind() == DriverKind::Uring;
    if uring && cfg!(target_os = "linux") && kernel_at_least(6, 12) {
        assert!(rt.capabilities().min_wait, "{}", rt.capabilities());
    }
    let expected = (uring && rt.capabilities().min_wait).then_some(WINDOW);
    assert_eq!(rt.coalescing(), expected);
    // Off unless asked for, and a zero window is off.
    let plain = coring::Runtime::builder()
        .coalesce_wakeups(Some(Duration::ZERO))
        .build()
        .unwrap();
    assert_eq!(plain.coalescing(), None);
}

#[coring::test]
fn a_timer_due_inside_the_window_fires_on_time() {
    let rt = runtime();
    let slept = rt.block_on(async {
        let start = Instant::now();
        coring::time::sleep(Duration::from_millis(20)).await;
        start.elapsed()
    });
    // Late by the window (300 ms) if the kernel's min-wait outlasted the timer.
    assert!(
        slept < Duration::from_millis(200),
        "20 ms sleep took {slept:?}"
    );
}

#[coring::test]
fn the_first_arrival_after_a_quiet_window_wakes_the_core_at_once() {
    let rt = runtime();
    let waited = rt.block_on(async {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket.local_addr().unwrap();
        let sender = std::thread::spawn(move || {
            // Well after the window: the core has been asleep with nothing for longer.
            std::thread::sleep(WINDOW * 2);
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let at = Instant::now();
            s.send_to(b"late", to).unwrap();
            at
        });
        let mut rx = socket.pooled();
        let d = rx.next().await.unwrap();
        let received = Instant::now();
        assert_eq!(&d.data[..], b"late");
        let sent_at = sender.join().unwrap();
        received.saturating_duration_since(sent_at)
    });
    assert!(
        waited < Duration::from_millis(150),
        "a datagram after a quiet window waited {waited:?}"
    );
}

#[coring::test]
fn datagrams_arriving_while_the_core_sleeps_share_its_wake_ups() {
    let rt = runtime();
    let coalescing = rt.coalescing().is_some();
    const COUNT: usize = 20;
    let enters = rt.block_on(async {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket.local_addr().unwrap();
        let mut rx = socket.pooled();
        let before = coring::runtime::stats().enters;
        let sender = std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..COUNT as u8 {
                s.send_to(&[i; 32], to).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        for i in 0..COUNT as u8 {
            let d = rx.next().await.unwrap();
            assert_eq!(&d.data[..], &[i; 32][..], "in order, whole");
        }
        sender.join().unwrap();
        coring::runtime::stats().enters - before
    });
    // Twenty arrivals 2 ms apart fit in one 300 ms window: a few wake-ups, not one each.
    if coalescing {
        assert!(enters <= 8, "{enters} enters for {COUNT} datagrams");
    }
}
