//! `Config::on_error` hears of every connection that ends early, over real sockets on both
//! drivers: broken HTTP, a head too slow, a write that timed out against a client that stopped
//! reading, a refusal over `max_connections`, a connection without its PROXY header; each with
//! the client's address, while the server goes on serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coring_protocols::cidr::Cidr;
use coring_protocols::http1::{Request, Response, Timer};
use coring_protocols::serve::{Config, ConnError, ErrorHook, ProxyProtocol, ProxyRefusal, Refusal};
use coring_tests::{TestServer, serve};

/// What the hook heard: the client and the error, as text.
type Heard = Arc<Mutex<Vec<(Option<SocketAddr>, String)>>>;

fn listening(config: Config) -> (TestServer, Heard) {
    let heard: Heard = Arc::default();
    let h = Arc::clone(&heard);
    let config = Config {
        on_error: Some(ErrorHook::new(move |client, error| {
            let what = match error {
                ConnError::Http(e) => format!("http {}", e.status()),
                ConnError::TimedOut(Timer::Header) => "head timed out".to_owned(),
                ConnError::TimedOut(t) => format!("timed out {t:?}"),
                ConnError::Io(e) => format!("io {:?}", e.kind()),
                ConnError::Refused(Refusal::OverCapacity) => "over capacity".to_owned(),
                ConnError::Refused(r) => format!("refused {r:?}"),
                ConnError::Proxy(ProxyRefusal::Missing) => "proxy missing".to_owned(),
                ConnError::Proxy(p) => format!("proxy {p:?}"),
                other => format!("{other}"),
            };
            h.lock().unwrap().push((client, what));
        })),
        ..config
    };
    let server = serve(config, || {
        |req: Request| async move {
            if req.path() == "/big" {
                Response::new(200).body(vec![b'x'; 16 << 20])
            } else {
                Response::new(200).body("ok")
            }
        }
    });
    (server, heard)
}

/// Waits until the hook heard `what` (from `client`, when given).
fn heard(heard: &Heard, what: &str, client: Option<SocketAddr>) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let got = heard.lock().unwrap();
            if got
                .iter()
                .any(|(c, w)| w == what && (client.is_none() || *c == client))
            {
                return;
            }
            assert!(Instant::now() < until, "never heard {what:?}: {got:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ok(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[coring::test]
fn the_error_hook_hears_of_each_connection_that_ends_early() {
    let (server, log) = listening(Config {
        client_addr: true,
        header_timeout: Duration::from_millis(200),
        write_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let addr = server.addr;

    // Broken HTTP: answered 400, and the hook names the client.
    let mut bad = TcpStream::connect(addr).unwrap();
    let me = bad.local_addr().unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost x\r\n\r\n").unwrap();
    heard(&log, "http 400", Some(me));

    // A head that never ends.
    let mut slow = TcpStream::connect(addr).unwrap();
    let me = slow.local_addr().unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    heard(&log, "head timed out", Some(me));

    // A client that asks for 16 MiB and stops reading: the write times out.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stalled: TcpStream = socket.into();
    let me = stalled.local_addr().unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    heard(&log, "io TimedOut", Some(me));

    ok(addr);
    drop((bad, slow, stalled));
}

#[coring::test]
fn refusals_reach_the_hook() {
    // One connection per core at a time: the second is refused.
    let (server, log) = listening(Config {
        max_connections: 1,
        ..Config::default()
    });
    let first = TcpStream::connect(server.addr).unwrap();
    // The first is being served before the second arrives.
    std::thread::sleep(Duration::from_millis(100));
    let mut second = TcpStream::connect(server.addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = second.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    heard(&log, "over capacity", None);
    drop(first);

    // A PROXY listener: a trusted peer that sends no header is closed, and the hook is told.
    let (server, log) = listening(Config {
        proxy_protocol: Some(ProxyProtocol::trusting(vec![
            "127.0.0.1/32".parse::<Cidr>().unwrap(),
        ])),
        ..Config::default()
    });
    let mut bare = TcpStream::connect(server.addr).unwrap();
    let me = bare.local_addr().unwrap();
    bare.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    heard(&log, "proxy missing", Some(me));
}
