//! WebSocket sessions over real loopback sockets beyond plain echo: our client against
//! tungstenite's server, a group publishing to readers of which some stop reading (each slow
//! one's queue policy acts, the others get everything), senders on another core and on a
//! plain thread, and the two halves of a session in two tasks.

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coring_protocols::serve::{Config, Router};
use coring_protocols::websocket::{self as ws, Group, QueuePolicy, TrySendError, WsConfig};
use coring_tests::serve;
use tungstenite::Message as TMessage;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// A tungstenite server on a thread: echoes every message, those over 1 KiB cut into three
/// fragments.
fn tungstenite_echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let config = tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(64 << 20))
                    .max_frame_size(Some(64 << 20));
                let Ok(mut socket) = tungstenite::accept_with_config(stream, Some(config)) else {
                    return;
                };
                loop {
                    let message = match read(&mut socket) {
                        Ok(m) => m,
                        Err(_) => return,
                    };
                    let (data, opcode) = match message {
                        TMessage::Text(t) => {
                            (bytes::Bytes::from(t.as_bytes().to_vec()), Data::Text)
                        }
                        TMessage::Binary(b) => (b, Data::Binary),
                        _ => continue,
                    };
                    let sent = if data.len() > 1024 {
                        let third = data.len() / 3;
                        let pieces = [
                            (data.slice(..third), OpCode::Data(opcode), false),
                            (
                                data.slice(third..2 * third),
                                OpCode::Data(Data::Continue),
                                false,
                            ),
                            (data.slice(2 * third..), OpCode::Data(Data::Continue), true),
                        ];
                        pieces.into_iter().try_for_each(|(piece, op, fin)| {
                            socket.write(TMessage::Frame(Frame::message(piece, op, fin)))
                        })
                    } else if opcode == Data::Text {
                        let text = String::from_utf8(data.to_vec()).unwrap();
                        socket.write(TMessage::text(text))
                    } else {
                        socket.write(TMessage::binary(data))
                    };
                    if sent.and_then(|()| socket.flush()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[coring::test]
async fn our_client_gets_every_message_back_from_tungstenite_0_bytes_to_16_mib() {
    let addr = tungstenite_echo_server();
    let mut socket = ws::connect(&format!("ws://{addr}/"))
        .await
        .expect("handshake");
    for size in [0usize, 1, 125, 126, 1025, 65_535, 65_536, 1 << 20, 16 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let binary = ws::Message::Binary(data.into());
        socket.send(&binary).await.unwrap();
        assert_eq!(
            socket.recv().await.unwrap().as_ref(),
            Some(&binary),
            "binary of {size} bytes"
        );
        let text: String = "wörld ".chars().cycle().take(size / 2).collect();
        let text = ws::Message::Text(text.into());
        socket.send(&text).await.unwrap();
        assert_eq!(
            socket.recv().await.unwrap().as_ref(),
            Some(&text),
            "text of {size} bytes"
        );
    }
    socket.close(1000, "done").await.unwrap();
    // tungstenite answers the close; then the session is over.
    assert_eq!(socket.recv().await.unwrap(), None);
}

#[coring::test]
async fn connect_reports_a_refused_upgrade_and_a_bad_url() {
    let server =
        coring_tests::known::http_server(coring_tests::known::Behaviour::Delay(Duration::ZERO));
    match ws::connect(&format!("ws://{server}/")).await {
        Err(ws::ConnectError::Refused(status)) => assert_ne!(status, 101),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ws::connect("http://127.0.0.1:1/").await,
        Err(ws::ConnectError::InvalidUrl(_))
    ));
}

/// One 4-byte sequence number, then padding.
fn numbered(i: u32, size: usize) -> ws::Message {
    let mut data = vec![0u8; size.max(4)];
    data[..4].copy_from_slice(&i.to_be_bytes());
    ws::Message::Binary(data.into())
}

fn number(data: &[u8]) -> u32 {
    u32::from_be_bytes([data[0], data[1], data[2], data[3]])
}

/// A room: every session joins one group with the queue policy its query names
/// (`await`, `drop`, `close`), is told `joined`, and `publish N SIZE` from any member sends N
/// numbered messages to all, then reports to the one who asked.
fn room() -> Router {
    let group = Rc::new(Group::new());
    Router::new().route("GET", "/room", move |req, _p| {
        let group = Rc::clone(&group);
        let policy = match req.query() {
            Some("drop") => QueuePolicy::DropOldest,
            Some("close") => QueuePolicy::Close(1013),
            _ => QueuePolicy::Await,
        };
        async move {
            ws::accept(&req, WsConfig::default(), move |mut socket| async move {
                socket.set_queue(256 << 10, policy);
                group.join(&socket.writer());
                if socket
                    .send(&ws::Message::Text("joined".into()))
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(message)) = socket.recv().await {
                    let Some(text) = message.as_text() else {
                        continue;
                    };
                    let mut words = text.split(' ').skip(1).map(|w| w.parse().unwrap_or(0));
                    let (n, size) = (words.next().unwrap_or(0), words.next().unwrap_or(0));
                    let mut total = ws::Published::default();
                    for i in 0..n {
                        let p = group.publish(&numbered(i as u32, size)).await;
                        total.dropped += p.dropped;
                        total.closed = total.closed.max(p.closed);
                    }
                    let report = format!(
                        "published dropped={} closed={}",
                        total.dropped, total.closed
                    );
                    if socket
                        .send(&ws::Message::Text(report.into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        }
    })
}

/// The next message; a read interrupted by a signal (EINTR, seen on the io_uring case's test
/// thread) is retried.
fn read<S: std::io::Read + std::io::Write>(
    socket: &mut tungstenite::WebSocket<S>,
) -> tungstenite::Result<TMessage> {
    loop {
        match socket.read() {
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

fn join_room(addr: SocketAddr, policy: &str) -> tungstenite::WebSocket<std::net::TcpStream> {
    let config = tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(64 << 20));
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut socket, _) = tungstenite::client::client_with_config(
        format!("ws://{addr}/room?{policy}"),
        stream,
        Some(config),
    )
    .expect("handshake");
    match read(&mut socket).unwrap() {
        TMessage::Text(t) => assert_eq!(t.as_str(), "joined"),
        other => panic!("{other:?}"),
    }
    socket
}

#[coring::test]
fn a_reader_that_stops_meets_its_policy_and_the_others_get_everything() {
    const N: u32 = 400;
    const SIZE: usize = 64 << 10;
    let server = serve(Config::default(), room);
    // Two readers that stop reading (25 MiB is more than loopback's socket buffers hold).
    let mut cut_off = join_room(server.addr, "close");
    let mut dropping = join_room(server.addr, "drop");
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut socket = join_room(server.addr, "await");
            std::thread::spawn(move || {
                for i in 0..N {
                    match read(&mut socket).unwrap() {
                        TMessage::Binary(b) => assert_eq!((number(&b), b.len()), (i, SIZE)),
                        other => panic!("{other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut publisher = join_room(server.addr, "await");
    publisher
        .send(TMessage::text(format!("publish {N} {SIZE}")))
        .unwrap();
    for i in 0..N {
        match read(&mut publisher).unwrap() {
            TMessage::Binary(b) => assert_eq!(number(&b), i),
            other => panic!("{other:?}"),
        }
    }
    let report = match read(&mut publisher).unwrap() {
        TMessage::Text(t) => t.to_string(),
        other => panic!("{other:?}"),
    };
    for r in readers {
        r.join().unwrap();
    }
    let dropped: usize = report
        .split("dropped=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|d| d.parse().ok())
        .unwrap();
    assert!(dropped > 0, "{report}");
    assert!(report.ends_with("closed=1"), "{report}");
    // The dropping reader gets what the kernel held, then the newest of the rest, in order,
    // ending with the last.
    let mut seen = Vec::new();
    while seen.last() != Some(&(N - 1)) {
        match read(&mut dropping).unwrap() {
            TMessage::Binary(b) => seen.push(number(&b)),
            other => panic!("{other:?}"),
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(seen.len() < N as usize, "some were dropped");
    // The cut-off reader gets what was written before, then a close with 1013.
    let code = loop {
        match read(&mut cut_off) {
            Ok(TMessage::Binary(_)) => {}
            Ok(TMessage::Close(Some(frame))) => break u16::from(frame.code),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 1013);
}

#[coring::test]
fn senders_on_another_core_and_a_plain_thread_reach_the_session_in_order() {
    const EACH: u32 = 2000;
    let rt = coring::Runtime::builder().cores(2).build().unwrap();
    let shutdown = rt.shutdown_handle();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    let closed_tx = std::sync::Mutex::new(Some(closed_tx));
    let server = std::thread::spawn(move || {
        rt.run(|core| {
            let listener = (core.index() == 0).then(|| {
                let l = coring::net::TcpListener::bind("127.0.0.1:0").unwrap();
                addr_tx.send(l.local_addr()).unwrap();
                l
            });
            let closed_tx = listener
                .as_ref()
                .and_then(|_| closed_tx.lock().unwrap().take());
            async move {
                let Some(listener) = listener else {
                    coring::runtime::shutdown_signal().await;
                    return;
                };
                let closed_tx = closed_tx.unwrap();
                let router = Router::new().route("GET", "/", move |req, _p| {
                    let closed_tx = closed_tx.clone();
                    async move {
                        ws::accept(&req, WsConfig::default(), move |mut socket| async move {
                            // A small queue: both senders meet backpressure.
                            socket.set_queue(16 << 10, QueuePolicy::Await);
                            let sender = socket.sender();
                            let remote = sender.clone();
                            let on_core_1 = coring::shard::spawn_on(1, move || async move {
                                for i in 0..EACH {
                                    remote.send(numbered(i, 1024)).await.unwrap();
                                }
                            })
                            .unwrap();
                            let closed_tx = closed_tx.clone();
                            std::thread::spawn(move || {
                                for i in 0..EACH {
                                    let mut m = numbered(EACH + i, 512);
                                    loop {
                                        match sender.try_send(m) {
                                            Ok(()) => break,
                                            Err(TrySendError::Full(back)) => {
                                                m = back;
                                                std::thread::sleep(Duration::from_micros(50));
                                            }
                                            Err(e) => panic!("{e}"),
                                        }
                                    }
                                }
                                // Once the session is gone, sends fail (and give the message
                                // back); until then these 4-byte probes reach the client.
                                let until = Instant::now() + Duration::from_secs(20);
                                let mut saw_closed = false;
                                while !saw_closed && Instant::now() < until {
                                    saw_closed = matches!(
                                        sender.try_send(numbered(0, 1)),
                                        Err(TrySendError::Closed(_))
                                    );
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                                let _ = closed_tx.send(saw_closed);
                            });
                            on_core_1.await.unwrap();
                            while let Ok(Some(_)) = socket.recv().await {}
                        })
                    }
                });
                coring_protocols::serve::Server::new(router)
                    .serve(listener)
                    .await;
            }
        })
        .unwrap();
    });
    let addr = addr_rx.recv().unwrap();
    let (mut client, _) = tungstenite::connect(format!("ws://{addr}/")).expect("handshake");
    let (mut next_core, mut next_thread) = (0, EACH);
    while next_core < EACH || next_thread < 2 * EACH {
        match read(&mut client).unwrap() {
            // The thread's probes for the end of the session.
            TMessage::Binary(b) if b.len() == 4 => {}
            TMessage::Binary(b) => {
                let n = number(&b);
                if n < EACH {
                    assert_eq!((n, b.len()), (next_core, 1024));
                    next_core += 1;
                } else {
                    assert_eq!((n, b.len()), (next_thread, 512));
                    next_thread += 1;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    client.close(None).unwrap();
    while read(&mut client).is_ok() {}
    assert!(
        closed_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        "the thread's sender saw the session close"
    );
    shutdown.shutdown();
    server.join().unwrap();
}

#[coring::test]
fn the_two_halves_work_from_two_tasks() {
    fn ticker() -> Router {
        Router::new().route("GET", "/", |req, _p| async move {
            ws::accept(&req, WsConfig::default(), |socket| async move {
                let (mut reader, writer) = socket.split();
                let ticks = writer.clone();
                let ticking = coring::spawn_local(async move {
                    for i in 0..200u32 {
                        if ticks.send(&numbered(i, 300)).await.is_err() {
                            return;
                        }
                        coring::time::sleep(Duration::from_micros(200)).await;
                    }
                });
                while let Ok(Some(message)) = reader.recv().await {
                    if writer.send(&message).await.is_err() {
                        break;
                    }
                }
                let _ = ticking.await;
            })
        })
    }
    let server = serve(Config::default(), ticker);
    let (mut client, _) =
        tungstenite::connect(format!("ws://{}/", server.addr)).expect("handshake");
    for i in 0..100 {
        client.send(TMessage::text(format!("echo {i}"))).unwrap();
    }
    let (mut ticks, mut echoes) = (0u32, 0);
    while ticks < 200 || echoes < 100 {
        match read(&mut client).unwrap() {
            TMessage::Binary(b) => {
                assert_eq!(number(&b), ticks);
                ticks += 1;
            }
            TMessage::Text(t) => {
                assert_eq!(t.as_str(), format!("echo {echoes}"));
                echoes += 1;
            }
            other => panic!("{other:?}"),
        }
    }
}
