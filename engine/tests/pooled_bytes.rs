//! Pooled buffers handed out as `Bytes` without a copy (`PooledBuf::into_bytes`): the bytes
//! are the ones received, a view dropped on the core gives its buffer back at once, and views
//! dropped on another thread come back through the core's return queue, waking a receive that
//! was waiting for a buffer.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use coring::net::{TcpListener, TcpStream};

fn chunk(i: u8) -> Vec<u8> {
    (0..3000u32)
        .map(|k| (k as u8).wrapping_mul(7) ^ i)
        .collect()
}

#[coring::test(pool_buffers = 4, pool_bytes = 4096)]
async fn views_of_pooled_buffers_come_back_from_any_thread() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr();
    // The client sends one chunk at a time, each once the last was taken.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut i = 0;
        while go_rx.recv().is_ok() {
            s.write_all(&chunk(i)).unwrap();
            i += 1;
        }
    });
    let (stream, _) = listener.accept().await.unwrap();
    let stream: TcpStream = stream;
    let mut reader = stream.pooled();

    // One view dropped here: its buffer is back at once.
    go_tx.send(()).unwrap();
    let first = reader.next().await.unwrap().unwrap();
    let first_len = first.len();
    let view = first.into_bytes();
    assert_eq!(coring::runtime::pool_stats().in_use, 1);
    drop(view);
    assert_eq!(coring::runtime::pool_stats().in_use, 0);
    let mut got = Vec::new();
    // (The first chunk may have come in more than one receive.)
    let mut want = chunk(0);
    want.drain(..first_len);
    while got.len() < want.len() {
        let buf = reader.next().await.unwrap().unwrap();
        got.extend_from_slice(&buf);
    }
    assert_eq!(got, want);

    // Views sent to another thread and held there: the pool runs dry.
    let (view_tx, view_rx) = std::sync::mpsc::channel::<Bytes>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok(v) = view_rx.recv_timeout(Duration::from_millis(200)) {
            held.push(v);
        }
        release_rx.recv().unwrap();
        let whole: Vec<u8> = held.iter().flat_map(|v| v.iter().copied()).collect();
        drop(held);
        whole
    });
    let mut sent = 0;
    let mut chunks = 1;
    for i in 1..=4u8 {
        chunks = i + 1;
        go_tx.send(()).unwrap();
        let mut left = chunk(i).len();
        while left > 0 {
            let buf = reader.next().await.unwrap().unwrap();
            left -= buf.len();
            sent += 1;
            view_tx.send(buf.into_bytes()).unwrap();
        }
        if coring::runtime::pool_stats().free == 0 {
            break;
        }
    }
    assert!(sent >= 1);
    assert_eq!(
        coring::runtime::pool_stats().free,
        0,
        "the views hold every buffer"
    );
    drop(view_tx);
    // The next receive has no buffer until the other thread lets go of its views.
    go_tx.send(()).unwrap();
    let waiting = coring::spawn_local(async move {
        let buf = reader.next().await.unwrap().unwrap();
        buf.to_vec()
    });
    coring::time::sleep(Duration::from_millis(300)).await;
    release_tx.send(()).unwrap();
    let next = waiting.await.unwrap();
    assert_eq!(next[..], chunk(chunks)[..next.len()]);
    // The views held the bytes as received.
    let whole = holder.join().unwrap();
    let expected: Vec<u8> = (1..chunks).flat_map(chunk).collect();
    assert_eq!(whole, expected);
    // Every view is gone: every buffer is back in the pool.
    coring::time::sleep(Duration::from_millis(20)).await;
    let stats = coring::runtime::pool_stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(stats.free, 4, "{stats:?}");
    drop(go_tx);
    client.join().unwrap();
}
