//! The thread-per-core runtime: cores, pinning, SO_REUSEPORT sharding, graceful shutdown, the
//! capability report and driver selection.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coring::driver::probe::{DriverChoice, DriverKind, UringStatus};
use coring::net::TcpListener;
use coring::runtime::{Runtime, until_shutdown};
use coring::time::sleep;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CPUs this process may run on (Linux; elsewhere the test checks all but pinning).
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: plain data, filled by the kernel.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size.
    unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    // SAFETY: bounded by CPU_SETSIZE.
    let cpus = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    Some(cpus)
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Option<Vec<usize>> {
    None
}

/// The CPU the calling thread runs on.
#[cfg(target_os = "linux")]
fn current_cpu() -> Option<usize> {
    // SAFETY: plain syscall.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

#[cfg(not(target_os = "linux"))]
fn current_cpu() -> Option<usize> {
    None
}

#[coring::test]
fn every_core_runs_its_root_on_its_own_thread_and_pinned_cpu() {
    let rt = Runtime::builder().cores(2).pin(true).build().unwrap();
    let kind = rt.driver_kind();
    let seen = Mutex::new(Vec::new());
    let allowed = allowed_cpus();
    rt.run(|core| {
        let seen = &seen;
        let index = core.index();
        let name = std::thread::current().name().map(String::from);
        let cpu = current_cpu();
        seen.lock().unwrap().push((index, name, cpu, core.cores()));
        async move {
            assert_eq!(coring::runtime::core_index(), index);
            assert_eq!(coring::runtime::driver_kind(), kind);
        }
    })
    .unwrap();
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen.len(), 2);
    for (i, (index, name, cpu, cores)) in seen.into_iter().enumerate() {
        assert_eq!(index, i);
        assert_eq!(cores, 2);
        assert_eq!(name.as_deref(), Some(format!("coring-{i}").as_str()));
        if let (Some(cpu), Some(allowed)) = (cpu, &allowed) {
            assert_eq!(cpu, allowed[i % allowed.len()], "core {i} pinned");
        }
    }
}

#[coring::test]
fn reuseport_listeners_spread_connections_over_both_cores() {
    let port = free_port();
    let rt = Runtime::builder().cores(2).build().unwrap();
    let shutdown = rt.shutdown_handle();
    let bound = Arc::new(AtomicUsize::new(0));
    let b = bound.clone();
    let clients = std::thread::spawn(move || {
        while b.load(Ordering::Acquire) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut cores = HashSet::new();
        for _ in 0..200 {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut which = [0u8; 1];
            s.read_exact(&mut which).unwrap();
            cores.insert(which[0]);
        }
        shutdown.shutdown();
        cores
    });
    rt.run(|core| {
        let listener = TcpListener::bind_reuseport(("127.0.0.1", port)).unwrap();
        bound.fetch_add(1, Ordering::Release);
        let me = core.index() as u8;
        async move {
            let mut incoming = listener.incoming();
            while let Some(conn) = until_shutdown(incoming.next()).await {
                let conn = conn.unwrap();
                coring::spawn_local(async move {
                    let _ = conn.write_all(vec![me]).await;
                });
            }
        }
    })
    .unwrap();
    let cores = clients.join().unwrap();
    assert_eq!(
        cores,
        HashSet::from([0, 1]),
        "the kernel spread connections"
    );
}

#[coring::test]
fn shutdown_stops_accepting_but_lets_in_flight_work_finish() {
    let port = free_port();
    let rt = Runtime::builder()
        .cores(1)
        .shutdown_grace(Duration::from_secs(20))
        .build()
        .unwrap();
    let shutdown = rt.shutdown_handle();
    let client = std::thread::spawn(move || {
        let mut s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        s.write_all(b"work").unwrap();
        // The server is now busy for 300 ms with our request; ask for shutdown meanwhile.
        std::thread::sleep(Duration::from_millis(50));
        let asked = Instant::now();
        shutdown.shutdown();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        // New connections are no longer accepted once shutdown began.
        std::thread::sleep(Duration::from_millis(50));
        let refused = std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
        (reply, asked, refused)
    });
    let start = Instant::now();
    rt.run(|_| {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        async move {
            while let Some(Ok((conn, _))) = until_shutdown(listener.accept()).await {
                coring::spawn_local(async move {
                    let (r, _) = conn.read_exact(Vec::with_capacity(4)).await;
                    r.unwrap();
                    sleep(Duration::from_millis(300)).await;
                    conn.write_all(b"done".to_vec()).await.0.unwrap();
                });
            }
            // The listener is dropped here: the port closes.
        }
    })
    .unwrap();
    let returned = start.elapsed();
    let (reply, _asked, refused) = client.join().unwrap();
    assert_eq!(reply, b"done", "in-flight request completed");
    assert!(refused, "no longer accepting");
    assert!(
        returned < Duration::from_secs(10),
        "returned once drained: {returned:?}"
    );
}

#[coring::test]
fn grace_period_end_cancels_stuck_tasks() {
    static DROPPED: AtomicBool = AtomicBool::new(false);
    struct Flag;
    impl Drop for Flag {
        fn drop(&mut self) {
            DROPPED.store(true, Ordering::SeqCst);
        }
    }
    let rt = Runtime::builder()
        .cores(2)
        .shutdown_grace(Duration::from_millis(100))
        .build()
        .unwrap();
    let shutdown = rt.shutdown_handle();
    let trigger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        shutdown.shutdown();
        Instant::now()
    });
    rt.run(|core| async move {
        if core.index() == 1 {
            coring::spawn_local(async {
                let _flag = Flag;
                sleep(Duration::from_secs(3600)).await;
            });
        }
    })
    .unwrap();
    let asked = trigger.join().unwrap();
    let took = asked.elapsed();
    assert!(
        DROPPED.load(Ordering::SeqCst),
        "stuck task dropped on its core"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[coring::test]
fn a_panicking_root_is_reraised_by_run_after_other_cores_stop() {
    let rt = Runtime::builder().cores(2).build().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.run(|core| async move {
            if core.index() == 0 {
                panic!("root failed");
            }
        })
    }));
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"root failed"));
}

#[coring::test(uring_only = "describes the io_uring ring")]
fn capability_report_describes_the_host_and_the_ring() {
    let rt = Runtime::builder()
        .driver(DriverChoice::Uring)
        .ring_entries(300)
        .build()
        .unwrap();
    assert_eq!(rt.fallback_reason(), None);
    let caps = rt.capabilities();
    assert_eq!(caps.driver, DriverKind::Uring);
    assert_eq!(caps.io_uring, UringStatus::Available);
    assert!(!caps.kernel.is_empty());
    assert!(caps.opcodes.len() >= 8);
    assert!(caps.opcodes.iter().all(|(_, ok)| *ok), "{:?}", caps.opcodes);
    let ring = caps.ring.as_ref().unwrap();
    assert_eq!(ring.requested_entries, 300);
    assert_eq!(ring.entries, 512, "rounded to a power of two");
    let version: Vec<u32> = caps
        .kernel
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    if version >= vec![6, 1] {
        assert!(ring.flags.single_issuer && ring.flags.defer_taskrun && ring.flags.coop_taskrun);
    }
    let text = caps.to_string();
    for needle in [
        "kernel",
        "io_uring_disabled",
        "RLIMIT_MEMLOCK",
        "ring:",
        "driver: Uring",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[coring::test(uring_only = "SQPOLL is an io_uring ring flag")]
fn sqpoll_is_opt_in_and_works() {
    let rt = Runtime::builder()
        .driver(DriverChoice::Uring)
        .sqpoll(Some(Duration::from_millis(10)))
        .build()
        .unwrap();
    let flags = rt.capabilities().ring.as_ref().unwrap().flags;
    assert!(flags.sqpoll && !flags.defer_taskrun, "{flags:?}");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = coring::net::TcpStream::connect(listener.local_addr())
            .await
            .unwrap();
        let (s, _) = listener.accept().await.unwrap();
        c.write_all(b"sq".to_vec()).await.0.unwrap();
        let (r, b) = s.read_exact(Vec::with_capacity(2)).await;
        r.unwrap();
        assert_eq!(b, b"sq");
    });
    let default = Runtime::builder()
        .driver(DriverChoice::Uring)
        .build()
        .unwrap();
    assert!(!default.capabilities().ring.as_ref().unwrap().flags.sqpoll);
}

#[coring::test(compat_only = "forces the compat driver through the builder")]
fn forcing_the_compat_driver_serves_and_says_why() {
    let rt = Runtime::builder()
        .driver(DriverChoice::Compat)
        .build()
        .unwrap();
    assert_eq!(rt.driver_kind(), DriverKind::Compat);
    let reason = rt.fallback_reason().unwrap();
    assert!(reason.contains("compat forced by builder"), "{reason}");
    let echoed = rt.block_on(async {
        assert_eq!(coring::runtime::driver_kind(), DriverKind::Compat);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = coring::net::TcpStream::connect(listener.local_addr())
            .await
            .unwrap();
        let (s, _) = listener.accept().await.unwrap();
        c.write_all(b"fallback".to_vec()).await.0.unwrap();
        let (r, b) = s.read_exact(Vec::with_capacity(8)).await;
        r.unwrap();
        b
    });
    assert_eq!(echoed, b"fallback");
}

#[coring::test(uring_only = "sizes the io_uring SQ and CQ")]
fn a_tiny_ring_survives_a_full_sq_and_cq_pressure() {
    // 64 SQ entries, 128 CQ entries, and 400 connections whose reads are all queued in the same
    // turn: the SQ fills mid-turn and is flushed; completions outnumber the CQ.
    let rt = Runtime::builder()
        .driver(DriverChoice::Uring)
        .ring_entries(64)
        .build()
        .unwrap();
    assert_eq!(rt.capabilities().ring.as_ref().unwrap().entries, 64);
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..400 {
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            servers.push(std::rc::Rc::new(listener.accept().await.unwrap().0));
        }
        let mut readers = Vec::new();
        for s in &servers {
            let s = s.clone();
            readers.push(coring::spawn_local(async move {
                let (r, b) = s.read_exact(Vec::with_capacity(8)).await;
                r.unwrap();
                b
            }));
        }
        coring::task::yield_now().await;
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(&(i as u64).to_le_bytes()).unwrap();
        }
        for (i, r) in readers.into_iter().enumerate() {
            assert_eq!(r.await.unwrap(), (i as u64).to_le_bytes());
        }
        let stats = coring::runtime::stats();
        assert!(stats.sq_full > 0, "the SQ filled up: {stats:?}");
        assert_eq!(stats.cq_dropped, 0, "{stats:?}");
    });
}

#[coring::test]
fn every_cores_counters_are_readable_from_another_thread_while_it_runs() {
    let port = free_port();
    let rt = Runtime::builder().cores(2).build().unwrap();
    let stats = rt.stats_handle();
    let shutdown = rt.shutdown_handle();
    let bound = Arc::new(AtomicUsize::new(0));
    let b = bound.clone();
    let observer = std::thread::spawn(move || {
        // Wait for both cores to bind, then drive traffic and watch the counters move.
        while b.load(Ordering::Acquire) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut conns = Vec::new();
        for _ in 0..40 {
            let mut s = loop {
                match std::net::TcpStream::connect(("127.0.0.1", port)) {
                    Ok(s) => break s,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            s.write_all(&[7u8; 1000]).unwrap();
            let mut back = [0u8; 1000];
            s.read_exact(&mut back).unwrap();
            conns.push(s);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = loop {
            let snap = stats.snapshot();
            let accepted: u64 = snap.iter().map(|c| c.net.accepted).sum();
            let bytes_in: u64 = snap.iter().map(|c| c.net.bytes_in).sum();
            let bytes_out: u64 = snap.iter().map(|c| c.net.bytes_out).sum();
            let settled = accepted == 40 && bytes_in == 40_000 && bytes_out == 40_000;
            if settled || Instant::now() > deadline {
                break snap;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        drop(conns);
        shutdown.shutdown();
        seen
    });
    rt.run(|_| {
        let listener = TcpListener::bind_reuseport(("127.0.0.1", port)).unwrap();
        bound.fetch_add(1, Ordering::Release);
        async move {
            let mut incoming = listener.incoming();
            while let Some(Ok(conn)) = until_shutdown(incoming.next()).await {
                coring::spawn_local(async move {
                    let mut reader = conn.pooled();
                    while let Ok(Some(buf)) = reader.next().await {
                        if conn.write_all(buf).await.0.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    })
    .unwrap();
    let seen = observer.join().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].core, 0);
    assert_eq!(seen[1].core, 1);
    let accepted: u64 = seen.iter().map(|c| c.net.accepted).sum();
    let bytes_in: u64 = seen.iter().map(|c| c.net.bytes_in).sum();
    let bytes_out: u64 = seen.iter().map(|c| c.net.bytes_out).sum();
    assert_eq!(accepted, 40, "{seen:?}");
    assert_eq!(bytes_in, 40_000, "{seen:?}");
    assert_eq!(bytes_out, 40_000, "{seen:?}");
    assert!(seen.iter().all(|c| c.driver.ops_completed > 0), "{seen:?}");
    assert!(seen.iter().all(|c| c.pool.buffers > 0), "{seen:?}");
    // After the run, the final figures are still there.
    let after = rt.stats();
    assert!(
        after.iter().map(|c| c.net.closed).sum::<u64>() >= 40,
        "{after:?}"
    );
}

#[coring::test]
fn each_case_runs_on_its_own_driver(driver: DriverChoice) {
    // Runtimes built on the case's thread without naming a driver take the case's.
    let want = match driver {
        DriverChoice::Uring => DriverKind::Uring,
        _ => DriverKind::Compat,
    };
    assert_eq!(Runtime::builder().build().unwrap().driver_kind(), want);
    assert_eq!(
        coring::block_on(async { coring::runtime::driver_kind() }),
        want
    );
    // A builder that names its driver keeps it.
    let compat = Runtime::builder()
        .driver(DriverChoice::Compat)
        .build()
        .unwrap();
    assert_eq!(compat.driver_kind(), DriverKind::Compat);
}

#[coring::test(cores = 2, pool_buffers = 16, pool_bytes = 2048)]
async fn async_cases_run_on_core_0_of_their_runtime() {
    assert_eq!(coring::runtime::core_index(), 0);
    assert_eq!(coring::runtime::pool_stats().free, 16);
    // The other core serves cross-core work meanwhile.
    let on_1 = coring::shard::spawn_on(1, || async { coring::runtime::core_index() })
        .unwrap()
        .await
        .unwrap();
    assert_eq!(on_1, 1);
}

#[coring::test]
async fn a_core_that_shuts_another_runtime_down_and_joins_it_does_not_wait_for_ever() {
    // The other runtime's core sleeps in the kernel, waiting for shutdown.
    let other = Runtime::builder().build().unwrap();
    let handle = other.shutdown_handle();
    let thread = std::thread::spawn(move || {
        other
            .run(|_| async { coring::runtime::shutdown_signal().await })
            .unwrap();
    });
    sleep(Duration::from_millis(100)).await;
    // Asked from this core, then joined without returning to it: the wake-up must not wait
    // for this core's next submission (a MSG_RING queued on its ring would).
    handle.shutdown();
    let (joined_tx, joined) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        thread.join().unwrap();
        let _ = joined_tx.send(());
    });
    // Blocks this core as a join would.
    assert!(
        joined.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the other runtime never woke to shut down"
    );
}
