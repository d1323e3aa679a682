//! The reconnecting client through every failure `docs/reconnect.md` lists, over real
//! sockets: a server not there yet (refused), one that resets, one whose accept queue is full
//! (connect timeout), a name that does not resolve and then moves to another address (dnsmasq),
//! a server that goes silent (half-open, caught by the heartbeat), a server restart with and
//! without replay, a message too big for the codec, giving up; a server restart over WebSocket
//! (tungstenite's server) and over TLS (rustls's).
#![cfg(target_os = "linux")]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use coring_protocols::dns::{Config as DnsConfig, ResolveError, Resolver};
use coring_protocols::framing::{LengthPrefixed, Prefix};
use coring_protocols::reconnect::{
    Backoff, Config, Event, Failure, Heartbeat, Jitter, Reconnecting, SendError, Target,
};
use coring_tests::dnsmasq::{Dnsmasq, free_port};

/// What a [`FrameServer`] does with a connection it accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Reads length-prefixed frames, records them, writes each back.
    Echo,
    /// Holds the connection and never reads or writes (a peer that froze, a path that died).
    Silent,
    /// Resets it at once (SO_LINGER 0).
    Reset,
}

/// A std server of u32-length-prefixed frames on `addr`: connections are treated as `modes`
/// says, in turn, then echoed. Stopped (its connections shut down, its port free) when
/// dropped.
struct FrameServer {
    _accepting: Accepting,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// A std listener's accept loop on a thread of its own, handing each connection to `serve`
/// (which may keep it in `open`); stopped when dropped: the loop ends, the port is free and
/// every connection kept is shut down.
struct Accepting {
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Accepting {
    fn start(
        addr: SocketAddr,
        mut serve: impl FnMut(TcpStream, &Mutex<Vec<TcpStream>>) + Send + 'static,
    ) -> Accepting {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (stopping, holding) = (stop.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        serve(stream, &holding);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Accepting {
            stop,
            open,
            thread: Some(thread),
        }
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl FrameServer {
    fn start(addr: SocketAddr, modes: &[Mode]) -> FrameServer {
        FrameServer::start_with(addr, modes, None)
    }

    /// The same behind TLS on `tls`.
    fn start_with(
        addr: SocketAddr,
        modes: &[Mode],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> FrameServer {
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut modes: VecDeque<Mode> = modes.iter().copied().collect();
        let recording = received.clone();
        let accepting = Accepting::start(addr, move |stream, holding| {
            match modes.pop_front().unwrap_or(Mode::Echo) {
                Mode::Reset => {
                    socket2::SockRef::from(&stream)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                    drop(stream);
                }
                Mode::Silent => holding.lock().unwrap().push(stream),
                Mode::Echo => {
                    holding.lock().unwrap().push(stream.try_clone().unwrap());
                    let recording = recording.clone();
                    let tls = tls.clone();
                    std::thread::spawn(move || match tls {
                        None => echo_frames(stream, &recording),
                        Some(config) => {
                            let conn = rustls::ServerConnection::new(config).unwrap();
                            echo_frames(rustls::StreamOwned::new(conn, stream), &recording)
                        }
                    });
                }
            }
        });
        FrameServer {
            _accepting: accepting,
            received,
        }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

fn echo_frames(mut stream: impl Read + Write, recording: &Mutex<Vec<Vec<u8>>>) {
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        if stream.read_exact(&mut payload).is_err() {
            return;
        }
        recording.lock().unwrap().push(payload.clone());
        if stream
            .write_all(&len)
            .and_then(|_| stream.write_all(&payload))
            .is_err()
        {
            return;
        }
    }
}

fn codec() -> LengthPrefixed {
    LengthPrefixed::new(Prefix::U32, 64 * 1024)
}

fn quick() -> Config {
    Config {
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            multiplier: 2.0,
            jitter: Jitter::None,
        },
        connect_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

fn tcp(addr: SocketAddr) -> Target {
    Target::Tcp {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

/// The next event within 5 s.
async fn next<C>(client: &mut Reconnecting<C>) -> Event
where
    C: coring_protocols::framing::Decoder<Item = Bytes>
        + coring_protocols::framing::Encoder<[u8]>
        + Clone
        + 'static,
{
    match coring::time::timeout(Duration::from_secs(5), client.next()).await {
        Ok(event) => event,
        Err(_) => panic!("no event within 5 s from {client:?}"),
    }
}

/// Events until `Connected`, returning them and the connected event.
async fn until_connected(client: &mut Reconnecting<LengthPrefixed>) -> (Vec<Event>, Event) {
    let mut before = Vec::new();
    loop {
        match next(client).await {
            event @ Event::Connected { .. } => return (before, event),
            event => before.push(event),
        }
    }
}

fn message(event: Event) -> Vec<u8> {
    match event {
        Event::Message(bytes) => bytes.to_vec(),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[coring::test]
async fn refused_until_the_server_starts_then_queued_messages_go_out() {
    let addr = local(free_port());
    let mut client = Reconnecting::new(tcp(addr), codec(), quick());
    client.send(&b"held while down"[..]).unwrap();
    let mut waits = Vec::new();
    for attempt in 1..=3 {
        match next(&mut client).await {
            Event::ConnectFailed {
                failure: Failure::Refused,
                attempt: a,
                retry_in,
            } => {
                assert_eq!(a, attempt);
                waits.push(retry_in);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(
        waits,
        [50, 100, 200].map(Duration::from_millis),
        "exponential"
    );
    let server = FrameServer::start(addr, &[]);
    let (_, connected) = until_connected(&mut client).await;
    assert!(
        matches!(
            connected,
            Event::Connected {
                queued: 1,
                replayed: 0,
                ..
            }
        ),
        "{connected:?}"
    );
    assert_eq!(message(next(&mut client).await), b"held while down");
    assert_eq!(server.received(), [b"held while down".to_vec()]);
    assert_eq!(client.stats().connect_failures, 3);
}

#[coring::test]
async fn a_reset_is_reported_and_the_next_connection_serves() {
    let addr = local(free_port());
    let _server = FrameServer::start(addr, &[Mode::Reset]);
    let mut client = Reconnecting::new(tcp(addr), codec(), quick());
    let (_, first) = until_connected(&mut client).await;
    assert!(matches!(first, Event::Connected { attempt: 1, .. }));
    match next(&mut client).await {
        Event::Disconnected {
            failure: Failure::Reset,
            ..
        } => {}
        other => panic!("expected a reset, got {other:?}"),
    }
    until_connected(&mut client).await;
    client.send(&b"after the reset"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"after the reset");
    // Asked for, a new connection is made at once.
    client.reconnect();
    assert_eq!(
        next(&mut client).await,
        Event::Disconnected {
            failure: Failure::Asked,
            retry_in: Duration::ZERO
        }
    );
    until_connected(&mut client).await;
    client.send(&b"after asking"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"after asking");
    assert_eq!(client.stats().connects, 3);
}

#[coring::test]
async fn a_connect_that_hangs_times_out() {
    // A listener whose accept queue is full drops new SYNs: connecting hangs.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&local(0).into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let _fill: Vec<socket2::Socket> = (0..4)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into());
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut client = Reconnecting::new(
        tcp(addr),
        codec(),
        Config {
            connect_timeout: Duration::from_millis(300),
            max_attempts: Some(2),
            ..quick()
        },
    );
    client.send(&b"never sent"[..]).unwrap();
    let started = std::time::Instant::now();
    match next(&mut client).await {
        Event::ConnectFailed {
            failure: Failure::ConnectTimedOut,
            attempt: 1,
            ..
        } => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The second timeout is the last attempt: the held message is handed back.
    match next(&mut client).await {
        Event::GaveUp {
            failure: Failure::ConnectTimedOut,
            attempts: 2,
            unsent,
        } => assert_eq!(unsent.len(), 1),
        other => panic!("expected to give up, got {other:?}"),
    }
    assert!(matches!(
        client.send(&b"late"[..]),
        Err(SendError::GaveUp(_))
    ));
    assert!(matches!(next(&mut client).await, Event::GaveUp { .. }));
}

#[coring::test]
async fn a_name_that_does_not_resolve_then_moves_to_another_address() {
    let dnsmasq = Dnsmasq::start(&["--local=/test/"], "");
    let port = free_port();
    let resolver = Resolver::new(DnsConfig {
        timeout: Duration::from_millis(500),
        ..DnsConfig::with_nameservers([dnsmasq.v4()])
    });
    let mut client = Reconnecting::new(
        Target::Tcp {
            host: "svc.test".into(),
            port,
        },
        codec(),
        Config {
            resolver: Some(resolver),
            ..quick()
        },
    );
    match next(&mut client).await {
        Event::ConnectFailed {
            failure: Failure::Resolve(ResolveError::NotFound { name }),
            ..
        } => assert_eq!(name, "svc.test"),
        other => panic!("expected the name to be missing, got {other:?}"),
    }
    let first = FrameServer::start(SocketAddr::from(([127, 0, 0, 2], port)), &[]);
    dnsmasq.set_hosts("127.0.0.2 svc.test\n");
    until_connected(&mut client).await;
    client.send(&b"to the first address"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"to the first address");

    // The service moves: the name now says 127.0.0.3, and the old server goes away.
    let second = FrameServer::start(SocketAddr::from(([127, 0, 0, 3], port)), &[]);
    dnsmasq.set_hosts("127.0.0.3 svc.test\n");
    drop(first);
    match next(&mut client).await {
        Event::Disconnected {
            failure: Failure::Closed | Failure::Reset,
            ..
        } => {}
        other => panic!("expected the old server to go, got {other:?}"),
    }
    until_connected(&mut client).await;
    client.send(&b"to the second address"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"to the second address");
    assert_eq!(second.received(), [b"to the second address".to_vec()]);
}

#[coring::test]
async fn a_silent_peer_is_caught_by_the_heartbeat() {
    let addr = local(free_port());
    let _server = FrameServer::start(addr, &[Mode::Silent]);
    let mut client = Reconnecting::new(
        tcp(addr),
        codec(),
        Config {
            heartbeat: Some(Heartbeat {
                interval: Duration::from_millis(150),
                timeout: Duration::from_millis(250),
                ping: Some(Bytes::from_static(b"ping")),
            }),
            ..quick()
        },
    );
    let dialled_at = std::time::Instant::now();
    until_connected(&mut client).await;
    match next(&mut client).await {
        Event::Disconnected {
            failure: Failure::HalfOpen,
            ..
        } => {}
        other => panic!("expected the silence to be caught, got {other:?}"),
    }
    // interval + timeout of silence from the connection's start.
    let silent_for = dialled_at.elapsed();
    // (Core timers run on millisecond ticks: allow one.)
    assert!(silent_for >= Duration::from_millis(398), "{silent_for:?}");
    assert!(client.stats().pings >= 1);
    // The next connection is echoed: its pings come back, and it stays up past the deadline.
    until_connected(&mut client).await;
    let deadline = std::time::Instant::now() + Duration::from_millis(900);
    while std::time::Instant::now() < deadline {
        match coring::time::timeout(Duration::from_millis(100), client.next()).await {
            Err(_) => {}
            Ok(Event::Message(ping)) => assert_eq!(&ping[..], b"ping"),
            Ok(other) => panic!("an echoing peer is alive, got {other:?}"),
        }
    }
}

#[coring::test]
async fn a_server_restart_replays_what_was_not_acknowledged() {
    let addr = local(free_port());
    let server = FrameServer::start(addr, &[]);
    let mut client = Reconnecting::new(
        tcp(addr),
        codec(),
        Config {
            replay: true,
            ..quick()
        },
    );
    until_connected(&mut client).await;
    let first = client.send(&b"one"[..]).unwrap();
    client.send(&b"two"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"one");
    assert_eq!(message(next(&mut client).await), b"two");
    // The application's protocol confirmed "one" only.
    assert_eq!(client.ack(first), 1);
    assert_eq!(client.unacked(), 1);

    drop(server);
    match next(&mut client).await {
        Event::Disconnected {
            failure: Failure::Closed | Failure::Reset,
            ..
        } => {}
        other => panic!("expected the server to go, got {other:?}"),
    }
    client.send(&b"three"[..]).unwrap();
    let restarted = FrameServer::start(addr, &[]);
    let (_, connected) = until_connected(&mut client).await;
    assert!(
        matches!(
            connected,
            Event::Connected {
                replayed: 1,
                queued: 1,
                ..
            }
        ),
        "{connected:?}"
    );
    assert_eq!(message(next(&mut client).await), b"two");
    assert_eq!(message(next(&mut client).await), b"three");
    assert_eq!(restarted.received(), [b"two".to_vec(), b"three".to_vec()]);
    assert_eq!(client.stats().replayed, 1);
}

#[coring::test]
async fn without_replay_a_restart_sends_nothing_twice() {
    let addr = local(free_port());
    let server = FrameServer::start(addr, &[]);
    let mut client = Reconnecting::new(tcp(addr), codec(), quick());
    until_connected(&mut client).await;
    client.send(&b"once"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"once");
    drop(server);
    assert!(matches!(
        next(&mut client).await,
        Event::Disconnected { .. }
    ));
    let restarted = FrameServer::start(addr, &[]);
    let (_, connected) = until_connected(&mut client).await;
    assert!(matches!(
        connected,
        Event::Connected {
            replayed: 0,
            queued: 0,
            ..
        }
    ));
    client.send(&b"after"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"after");
    assert_eq!(restarted.received(), [b"after".to_vec()]);
}

#[coring::test]
async fn an_oversized_message_is_handed_back_and_the_connection_goes_on() {
    let addr = local(free_port());
    let _server = FrameServer::start(addr, &[]);
    let mut client = Reconnecting::new(tcp(addr), LengthPrefixed::new(Prefix::U32, 8), quick());
    until_connected(&mut client).await;
    let big = client.send(vec![7u8; 9]).unwrap();
    match next(&mut client).await {
        Event::Unsendable { id, message, .. } => {
            assert_eq!(id, big);
            assert_eq!(message.len(), 9);
        }
        other => panic!("expected the big message back, got {other:?}"),
    }
    client.send(&b"small"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"small");
}

/// A WebSocket echo server from tungstenite (the Rust ecosystem's usual one), one thread per
/// connection; its connections are shut down when it is dropped.
struct WsEcho {
    _accepting: Accepting,
}

impl WsEcho {
    fn start(addr: SocketAddr) -> WsEcho {
        let accepting = Accepting::start(addr, |stream, holding| {
            holding.lock().unwrap().push(stream.try_clone().unwrap());
            std::thread::spawn(move || {
                let Ok(mut socket) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(message) = socket.read() {
                    if (message.is_binary() || message.is_text()) && socket.send(message).is_err() {
                        return;
                    }
                }
            });
        });
        WsEcho {
            _accepting: accepting,
        }
    }
}

#[coring::test]
async fn a_websocket_comes_back_after_its_server_restarts() {
    let addr = local(free_port());
    let server = WsEcho::start(addr);
    let mut client = Reconnecting::new(
        Target::WebSocket {
            url: format!("ws://{addr}/echo"),
            options: Default::default(),
        },
        codec(),
        Config {
            replay: true,
            ..quick()
        },
    );
    until_connected_any(&mut client).await;
    let id = client.send(&b"over websocket"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"over websocket");
    client.ack(id);
    drop(server);
    assert!(matches!(
        next(&mut client).await,
        Event::Disconnected { .. }
    ));
    client.send(&b"while it was down"[..]).unwrap();
    let _restarted = WsEcho::start(addr);
    until_connected_any(&mut client).await;
    assert_eq!(message(next(&mut client).await), b"while it was down");
}

async fn until_connected_any(client: &mut Reconnecting<LengthPrefixed>) {
    until_connected(client).await;
}

#[coring::test]
async fn a_tls_connection_comes_back_after_its_server_restarts() {
    let pki = coring_tests::pki::Pki::new(&["localhost"]);
    let addr = local(free_port());
    let server = FrameServer::start_with(addr, &[], Some(pki.server_config(&[])));
    let mut client = Reconnecting::new(
        Target::Tls {
            host: "localhost".into(),
            port: addr.port(),
            config: pki.client_config(),
        },
        codec(),
        Config {
            replay: true,
            ..quick()
        },
    );
    until_connected(&mut client).await;
    client.send(&b"over tls"[..]).unwrap();
    assert_eq!(message(next(&mut client).await), b"over tls");
    drop(server);
    match next(&mut client).await {
        Event::Disconnected {
            failure: Failure::Closed | Failure::Reset,
            ..
        } => {}
        other => panic!("expected the server to go, got {other:?}"),
    }
    let restarted = FrameServer::start_with(addr, &[], Some(pki.server_config(&[])));
    let (_, connected) = until_connected(&mut client).await;
    // "over tls" was never acknowledged: it is written again.
    assert!(
        matches!(connected, Event::Connected { replayed: 1, .. }),
        "{connected:?}"
    );
    assert_eq!(message(next(&mut client).await), b"over tls");
    assert_eq!(restarted.received(), [b"over tls".to_vec()]);

    // A server whose certificate the client does not trust is a TLS failure, retried.
    drop(restarted);
    let stranger = coring_tests::pki::Pki::new(&["localhost"]);
    let _impostor = FrameServer::start_with(addr, &[], Some(stranger.server_config(&[])));
    loop {
        match next(&mut client).await {
            Event::Disconnected { .. } => {}
            Event::ConnectFailed {
                failure: Failure::Tls(reason),
                ..
            } => {
                assert!(
                    reason.contains("certificate") || reason.contains("Certificate"),
                    "{reason}"
                );
                break;
            }
            other => panic!("expected a certificate failure, got {other:?}"),
        }
    }
}
