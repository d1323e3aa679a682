//! Dropping in-flight operations many thousands of times leaves the process healthy: no leaked
//! descriptors, no crash, no bytes delivered to a dropped read, accepted connections of dropped
//! accepts closed.
//!
//! One test per file, its two cases serial: it counts the process's open descriptors.

use std::io::{Read, Write};
use std::time::Duration;

use coring::driver::probe::DriverChoice;
use coring::net::{TcpListener, TcpStream};
use coring::time::{sleep, timeout};

/// The process's open descriptors, where the system lists them (Linux). Under Wine the list
/// is Wine's own Unix descriptors, which it opens and caches as it likes.
fn open_fds() -> Option<usize> {
    if cfg!(target_os = "linux") {
        Some(std::fs::read_dir("/proc/self/fd").unwrap().count())
    } else {
        None
    }
}

/// Waits until the core's driver holds no op (every cancel acknowledged). Only io_uring parks
/// memory for dropped ops; readiness-mode ops own nothing in the kernel.
async fn settle(driver: DriverChoice) {
    if driver != DriverChoice::Uring {
        return;
    }
    for _ in 0..500 {
        if coring::runtime::stats().in_flight == 0 {
            return;
        }
        sleep(Duration::from_millis(2)).await;
    }
    panic!("ops still in flight: {:?}", coring::runtime::stats());
}

#[coring::test(serial)]
fn dropping_in_flight_reads_and_accepts_leaks_nothing(driver: DriverChoice) {
    let baseline = open_fds();

    coring::block_on(async move {
        // Reads dropped before submission, right after submission, and while in the kernel.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        for i in 0..6000u32 {
            let wait = match i % 3 {
                0 => Duration::ZERO,
                1 => Duration::from_micros(1),
                _ => Duration::from_micros(200),
            };
            let r = timeout(wait, server.read(Vec::with_capacity(64))).await;
            assert!(r.is_err(), "no data was sent, the read cannot finish");
            if i.is_multiple_of(1000) {
                coring::task::yield_now().await;
            }
        }
        // Aborted tasks holding reads.
        for _ in 0..2000 {
            let s = std::rc::Rc::new(TcpStream::from_std(client.try_clone().unwrap()).unwrap());
            let mut h = coring::spawn_local(async move { s.read(Vec::with_capacity(8)).await });
            coring::task::yield_now().await;
            h.abort();
        }
        // `from_std` made the shared socket non-blocking; the std side below wants blocking.
        client.set_nonblocking(false).unwrap();
        settle(driver).await;
        let stats = coring::runtime::stats();
        if driver == DriverChoice::Uring {
            assert!(stats.cancels >= 6000, "{stats:?}");
            assert_eq!(stats.cancel_failures, 0, "{stats:?}");
        }

        // Nothing was consumed by the dropped reads: the next read sees exactly what is sent.
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        client.write_all(&payload).unwrap();
        let (r, got) = server.read_exact(Vec::with_capacity(payload.len())).await;
        r.unwrap();
        assert!(got == payload, "bytes reordered or lost");

        // And the other direction still works after all that.
        server.write_all(b"ok".to_vec()).await.0.unwrap();
        let mut two = [0u8; 2];
        client.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"ok");
    });

    coring::block_on(async move {
        // Accepts (single-shot and multishot) dropped while clients keep connecting: a
        // connection the kernel accepted for a dropped op must be closed, which the client sees
        // as end of stream.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        const CLIENTS: usize = 1500;
        let connector = std::thread::spawn(move || {
            let mut conns = Vec::with_capacity(CLIENTS);
            for _ in 0..CLIENTS {
                conns.push(std::net::TcpStream::connect(addr).unwrap());
            }
            conns
        });
        let mut taken = Vec::new();
        let mut round = 0u32;
        // At least 200 rounds however fast the clients connect (a round is one timer tick at
        // the least, and a quick connector can be done in a few of them).
        while !connector.is_finished() || round < 200 {
            round += 1;
            if round.is_multiple_of(2) {
                let wait = Duration::from_micros(u64::from(round % 50));
                if let Ok(Ok((s, _))) = timeout(wait, listener.accept()).await {
                    taken.push(s);
                }
            } else {
                let mut incoming = listener.incoming();
                if let Ok(Ok(s)) = timeout(Duration::from_micros(100), incoming.next()).await {
                    taken.push(s);
                }
                // Dropped with connections possibly queued in it.
            }
        }
        // Drain the rest of the backlog so every client is either taken or closed by us.
        while let Ok(Ok((s, _))) = timeout(Duration::from_millis(100), listener.accept()).await {
            taken.push(s);
        }
        settle(driver).await;
        let conns = connector.join().unwrap();
        let taken_ports: std::collections::HashSet<u16> = taken
            .iter()
            .map(|s| s.peer_addr().unwrap().port())
            .collect();
        drop(taken);
        // Every client now sees end of stream: nobody holds a server-side descriptor.
        for mut c in conns {
            let port = c.local_addr().unwrap().port();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 1];
            let n = loop {
                match c.read(&mut b) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => {
                        break r.unwrap_or_else(|e| {
                            panic!(
                                "client {port} (taken: {}): {e}",
                                taken_ports.contains(&port)
                            )
                        });
                    }
                }
            };
            assert_eq!(n, 0);
        }
    });

    // Both runtimes are gone: descriptors are back to where they started.
    if let (Some(after), Some(baseline)) = (open_fds(), baseline) {
        assert_eq!(after, baseline, "descriptors leaked");
    }
}
