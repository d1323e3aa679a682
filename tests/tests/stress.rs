//! 1,000 concurrent TCP connections across 2 server cores, each echoing 1 MiB sent in random
//! chunk sizes; every byte is checked.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use coring::net::{TcpListener, TcpStream};
use coring::runtime::{Runtime, until_shutdown};

const CONNECTIONS: usize = 1000;
const BYTES_PER_CONNECTION: usize = 1 << 20;
const MAX_CHUNK: usize = 64 * 1024;

/// xorshift64*: a fast deterministic stream per connection.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Byte `i` of connection `conn`'s stream.
fn byte_at(conn: usize, i: usize) -> u8 {
    let x =
        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (conn as u64).wrapping_mul(0xff51_afd7);
    (x >> 29) as u8
}

fn raise_fd_limit() {
    let limit = coring_tests::fd_limit();
    assert!(
        limit > CONNECTIONS * 2 + 100,
        "RLIMIT_NOFILE too low for the stress test: {limit}"
    );
}

#[coring::test]
fn thousand_connections_echo_a_mebibyte_each_across_two_cores() {
    raise_fd_limit();
    let server = Runtime::builder().cores(2).build().unwrap();
    let shutdown = server.shutdown_handle();
    let port = Arc::new(AtomicU16::new(0));
    let p = port.clone();

    let server_thread = std::thread::spawn(move || {
        server
            .run(|core| {
                let listener = if core.index() == 0 {
                    let l = TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
                    p.store(l.local_addr().port(), Ordering::Release);
                    l
                } else {
                    let port = loop {
                        match p.load(Ordering::Acquire) {
                            0 => std::thread::yield_now(),
                            port => break port,
                        }
                    };
                    TcpListener::bind_reuseport(("127.0.0.1", port)).unwrap()
                };
                async move {
                    let mut incoming = listener.incoming();
                    while let Some(conn) = until_shutdown(incoming.next()).await {
                        coring::spawn_local(echo(conn.unwrap()));
                    }
                }
            })
            .unwrap();
    });

    let port = loop {
        match port.load(Ordering::Acquire) {
            0 => std::thread::yield_now(),
            port => break port,
        }
    };
    // Give core 1 time to join the SO_REUSEPORT group.
    std::thread::sleep(std::time::Duration::from_millis(100));

    let client = Runtime::builder().cores(1).build().unwrap();
    let verified: usize = client.block_on(async move {
        coring_tests::fan_out(CONNECTIONS, |conn| client_conn(conn, port))
            .await
            .into_iter()
            .sum()
    });
    assert_eq!(verified, CONNECTIONS * BYTES_PER_CONNECTION);
    shutdown.shutdown();
    server_thread.join().unwrap();
}

async fn echo(stream: TcpStream) {
    let mut buf = Vec::with_capacity(MAX_CHUNK);
    loop {
        buf.clear();
        let (n, b) = stream.read(buf).await;
        buf = b;
        match n {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => panic!("server read: {e}"),
        }
        let (r, b) = stream.write_all(buf).await;
        buf = b;
        r.unwrap();
    }
}

/// Sends the connection's stream in random chunks while reading the echo back; returns the
/// number of bytes verified.
async fn client_conn(conn: usize, port: u16) -> usize {
    let stream = Rc::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    let writer = {
        let stream = stream.clone();
        coring::spawn_local(async move {
            let mut rng = Rng(conn as u64 * 2 + 1);
            let mut sent = 0;
            while sent < BYTES_PER_CONNECTION {
                let len = (rng.next() as usize % MAX_CHUNK + 1).min(BYTES_PER_CONNECTION - sent);
                let chunk: Vec<u8> = (sent..sent + len).map(|i| byte_at(conn, i)).collect();
                let (r, _) = stream.write_all(chunk).await;
                r.unwrap();
                sent += len;
            }
        })
    };
    let mut rng = Rng(conn as u64 * 2 + 2);
    let mut received = 0;
    while received < BYTES_PER_CONNECTION {
        let cap = rng.next() as usize % MAX_CHUNK + 1;
        let (n, buf) = stream.read(Vec::with_capacity(cap)).await;
        let n = n.unwrap();
        assert!(n > 0, "connection {conn} closed early at {received}");
        for (k, &b) in buf.iter().enumerate() {
            assert_eq!(
                b,
                byte_at(conn, received + k),
                "conn {conn} byte {}",
                received + k
            );
        }
        received += n;
    }
    writer.await.unwrap();
    received
}
