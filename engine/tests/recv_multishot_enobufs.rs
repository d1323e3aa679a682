//! Pooled receives (multishot recv into the core's buffer ring) under a deliberately tiny pool:
//! the ring runs dry (ENOBUFS) again and again, every byte still arrives intact, the receive is
//! re-armed without spinning, and the pool's counts come back to where they started.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use coring::driver::probe::DriverChoice;
use coring::net::{TcpListener, TcpStream};
use coring::runtime::{Runtime, until_shutdown};

const CONNECTIONS: usize = 200;
const BYTES_PER_CONNECTION: usize = 256 * 1024;
const POOL_BUFFERS: u16 = 8;
const POOL_BUFFER_BYTES: usize = 4096;

fn byte_at(conn: usize, i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9e37_79b9) ^ (conn as u64 * 131)) as u8
}

#[coring::test]
fn two_hundred_connections_through_an_eight_buffer_pool(driver: DriverChoice) {
    let server = Runtime::builder()
        .buffer_pool(POOL_BUFFERS, POOL_BUFFER_BYTES)
        .build()
        .unwrap();
    let shutdown = server.shutdown_handle();
    let port = Arc::new(AtomicU16::new(0));
    let p = port.clone();
    let server_thread = std::thread::spawn(move || {
        server.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            p.store(listener.local_addr().port(), Ordering::Release);
            let baseline = coring::runtime::pool_stats();
            assert_eq!(baseline.free, u64::from(POOL_BUFFERS));
            let mut incoming = listener.incoming();
            let mut conns = Vec::new();
            while let Some(conn) = until_shutdown(incoming.next()).await {
                conns.push(coring::spawn_local(echo_pooled(conn.unwrap())));
            }
            for c in conns {
                c.await.unwrap();
            }
            coring::time::sleep(Duration::from_millis(20)).await;
            (
                baseline,
                coring::runtime::pool_stats(),
                coring::runtime::stats(),
            )
        })
    });
    while port.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let port = port.load(Ordering::Acquire);

    let client = Runtime::builder().build().unwrap();
    let verified = client.block_on(async move {
        let mut tasks = Vec::new();
        for conn in 0..CONNECTIONS {
            tasks.push(coring::spawn_local(client_conn(conn, port)));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    assert_eq!(verified, CONNECTIONS * BYTES_PER_CONNECTION);
    shutdown.shutdown();
    let (baseline, after, stats) = server_thread.join().unwrap();
    eprintln!("pool {after:?}\ndriver {stats:?}");

    assert_eq!(after.in_use, 0, "every buffer came back: {after:?}");
    assert_eq!(
        after.free, baseline.free,
        "pool back to baseline: {after:?}"
    );
    if driver == DriverChoice::Uring {
        // The kernel fills buffers ahead of the reader, so 200 connections drain 8 buffers.
        // (Readiness mode takes a buffer only for the one receive it is making.)
        assert!(after.enobufs > 0, "the tiny pool ran dry: {after:?}");
    }
    // No spinning: the number of trips into the kernel stays in proportion to the buffers
    // actually filled (each holds at most 4 KiB).
    let buffers_filled = (CONNECTIONS * BYTES_PER_CONNECTION) / POOL_BUFFER_BYTES;
    assert!(
        stats.ops_submitted < (buffers_filled as u64) * 6,
        "{} SQEs for {buffers_filled} buffers: re-arms spun: {stats:?} {after:?}",
        stats.ops_submitted
    );
    assert!(
        stats.enters < (buffers_filled as u64) * 4,
        "{} enters for at least {buffers_filled} buffers: {stats:?} {after:?}",
        stats.enters
    );
}

/// Echoes with zero copies: the pooled buffer itself is written back.
async fn echo_pooled(stream: TcpStream) {
    let mut reader = stream.pooled();
    loop {
        let Some(buf) = reader.next().await.unwrap() else {
            return;
        };
        let (r, _buf) = stream.write_all(buf).await;
        r.unwrap();
    }
}

async fn client_conn(conn: usize, port: u16) -> usize {
    let stream = Rc::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    let writer = {
        let stream = stream.clone();
        coring::spawn_local(async move {
            let mut sent = 0;
            let mut seed = conn as u64 + 1;
            while sent < BYTES_PER_CONNECTION {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = ((seed >> 33) as usize % 9000 + 1).min(BYTES_PER_CONNECTION - sent);
                let chunk: Vec<u8> = (sent..sent + len).map(|i| byte_at(conn, i)).collect();
                stream.write_all(chunk).await.0.unwrap();
                sent += len;
            }
            stream.shutdown(std::net::Shutdown::Write).await.unwrap();
        })
    };
    let mut received = 0;
    let mut reader = stream.pooled();
    while let Some(buf) = reader.next().await.unwrap() {
        for (k, &b) in buf.iter().enumerate() {
            assert_eq!(
                b,
                byte_at(conn, received + k),
                "conn {conn} byte {}",
                received + k
            );
        }
        received += buf.len();
    }
    writer.await.unwrap();
    received
}

#[coring::test]
fn buffers_filled_for_a_dropped_receiver_return_to_the_pool() {
    let rt = Runtime::builder().buffer_pool(16, 1024).build().unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let baseline = coring::runtime::pool_stats();
        for round in 0..2000u32 {
            use std::io::Write;
            let mut reader = server.pooled();
            // Arm the receive, let data land in kernel-picked buffers, then drop the reader
            // without taking them (sometimes before, sometimes after the completions arrive).
            let _ = coring::time::timeout(Duration::ZERO, reader.next()).await;
            client.write_all(&[round as u8; 100]).unwrap();
            if round % 2 == 0 {
                coring::time::sleep(Duration::from_micros(50)).await;
            }
            drop(reader);
        }
        // Let the last cancellations finish.
        for _ in 0..200 {
            if coring::runtime::stats().in_flight == 0 {
                break;
            }
            coring::time::sleep(Duration::from_millis(1)).await;
        }
        let after = coring::runtime::pool_stats();
        assert_eq!(after.in_use, 0, "{after:?}");
        assert_eq!(after.free, baseline.free, "no buffer lost: {after:?}");
        // The connection still works with pooled reads.
        drop(client);
        let mut reader = server.pooled();
        let mut rest = 0;
        while let Some(b) = reader.next().await.unwrap() {
            rest += b.len();
        }
        assert!(rest <= 2000 * 100);
    });
}
