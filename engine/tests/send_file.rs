//! Files go to sockets without a user-space copy (splice on io_uring, sendfile on compat), and
//! positioned reads return the right bytes.

use std::io::{Read, Write};

use coring::fs::File;
use coring::net::TcpListener;

fn byte(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

fn temp_file(tag: &str, len: u64) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(coring::__test::unique(tag));
    let mut f = std::fs::File::create(&path).unwrap();
    let data: Vec<u8> = (0..len).map(byte).collect();
    f.write_all(&data).unwrap();
    path
}

#[coring::test]
fn send_file_moves_a_range_and_a_whole_file_intact() {
    const LEN: u64 = 3 * 1024 * 1024 + 123;
    let path = temp_file("send_file", LEN);
    let p = path.clone();
    let client = coring::block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let (s, _) = listener.accept().await.unwrap();
        let file = File::open(&p).unwrap();
        assert_eq!(file.len().unwrap(), LEN);
        // A range from the middle, then everything, then a range past the end (short).
        assert_eq!(
            s.send_file(&file, 1000, 2_000_000).await.unwrap(),
            2_000_000
        );
        assert_eq!(s.send_file(&file, 0, LEN).await.unwrap(), LEN);
        assert_eq!(s.send_file(&file, LEN - 10, 1000).await.unwrap(), 10);
        let out = coring::runtime::core_stats().net.bytes_out;
        assert_eq!(out, 2_000_000 + LEN + 10);
        // One pipe served all three on io_uring (the core keeps it); compat needs none.
        let pipes = coring::runtime::stats().pipes_made;
        let want = match coring::runtime::driver_kind() {
            coring::driver::probe::DriverKind::Uring => 1,
            _ => 0,
        };
        assert_eq!(pipes, want, "pipes made for three sends");
        drop(s);
        // Joined off the core: a blocking join here would stop the core from retiring what
        // the kernel still holds of the socket, and the reader would wait for its end.
        client
    });
    let got = client.join().unwrap();
    {
        assert_eq!(got.len() as u64, 2_000_000 + LEN + 10);
        let expect: Vec<u8> = (1000..2_001_000)
            .chain(0..LEN)
            .chain(LEN - 10..LEN)
            .map(byte)
            .collect();
        assert!(got == expect, "bytes differ");
    }
    std::fs::remove_file(path).unwrap();
}

#[coring::test]
fn read_at_reads_at_the_offset_and_reports_end_of_file() {
    let path = temp_file("read_at", 10_000);
    let p = path.clone();
    coring::block_on(async move {
        let file = File::open(&p).unwrap();
        let (n, buf) = file.read_at(Vec::with_capacity(100), 5000).await;
        assert_eq!(n.unwrap(), 100);
        assert_eq!(buf, (5000..5100).map(byte).collect::<Vec<u8>>());
        let (n, buf) = file.read_at(Vec::with_capacity(100), 9_950).await;
        assert_eq!(n.unwrap(), 50);
        assert_eq!(buf.len(), 50);
        let (n, _) = file.read_at(Vec::with_capacity(100), 10_000).await;
        assert_eq!(n.unwrap(), 0);
    });
    std::fs::remove_file(path).unwrap();
}

#[coring::test]
fn send_file_waits_for_a_reader_that_starts_late() {
    // Far more than the socket buffers hold while the reader sleeps: the splice into the full
    // socket must wait for room, not fail.
    const LEN: u64 = 32 * 1024 * 1024;
    let path = temp_file("send_file_late", LEN);
    let p = path.clone();
    let client = coring::block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let (s, _) = listener.accept().await.unwrap();
        let file = File::open(&p).unwrap();
        assert_eq!(s.send_file(&file, 0, LEN).await.unwrap(), LEN);
        drop(s);
        client
    });
    let got = client.join().unwrap();
    {
        assert_eq!(got.len() as u64, LEN);
        assert!(
            got.iter().enumerate().all(|(i, &b)| b == byte(i as u64)),
            "bytes differ"
        );
    }
    std::fs::remove_file(path).unwrap();
}

#[coring::test]
fn send_file_to_a_reader_that_stops_times_out() {
    // The write timeout bounds a file send as it bounds any write: a peer that never reads
    // cannot hold the sending task forever.
    const LEN: u64 = 64 * 1024 * 1024;
    let path = temp_file("send_file_stalled", LEN);
    let p = path.clone();
    coring::block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let s = std::net::TcpStream::connect(addr).unwrap();
            rx.recv().unwrap(); // never reads; holds the connection open until told
            drop(s);
        });
        let (s, _) = listener.accept().await.unwrap();
        s.set_write_timeout(Some(std::time::Duration::from_millis(200)));
        let file = File::open(&p).unwrap();
        let start = std::time::Instant::now();
        let err = s.send_file(&file, 0, LEN).await.unwrap_err();
        assert_eq!(err.kind(), coring::ErrorKind::TimedOut, "{err}");
        assert!(start.elapsed() >= std::time::Duration::from_millis(180));
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
        tx.send(()).unwrap();
        client.join().unwrap();
    });
    std::fs::remove_file(path).unwrap();
}
