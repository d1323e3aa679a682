//! Servers with known behaviour for the load generator to measure: plain threads and blocking
//! std sockets, so that what they do (delay, stall, reset, corrupt) is exactly what was asked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The plaintext response every test server sends.
pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// What a test HTTP server does with each request.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Answers every request after this delay, one request at a time per connection.
    Delay(Duration),
    /// Answers at once, except that the first request after `after` waits `stall` first.
    StallOnce { after: Duration, stall: Duration },
    /// Resets (RST) every tenth connection after reading its first request.
    ResetEveryTenth,
}

/// Starts an HTTP server on a free loopback port; it serves until the process ends.
pub fn http_server(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let stalled = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let n = accepted.fetch_add(1, Ordering::Relaxed) + 1;
            let stalled = Arc::clone(&stalled);
            std::thread::spawn(move || {
                serve(stream, behaviour, n, started, &stalled);
            });
        }
    });
    addr
}

fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    n: usize,
    started: std::time::Instant,
    stalled: &AtomicUsize,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Answer every complete request in the buffer, in order.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            match behaviour {
                Behaviour::Delay(d) => std::thread::sleep(d),
                Behaviour::StallOnce { after, stall } => {
                    if started.elapsed() >= after && stalled.fetch_add(1, Ordering::Relaxed) == 0 {
                        std::thread::sleep(stall);
                    }
                }
                Behaviour::ResetEveryTenth => {
                    if n.is_multiple_of(10) {
                        let sock = socket2::SockRef::from(&stream);
                        let _ = sock.set_linger(Some(Duration::ZERO));
                        return; // dropped with linger 0: RST
                    }
                }
            }
            if stream.write_all(RESPONSE).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => return,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// A TCP echo server; with `corrupt_after`, it flips one byte at that stream offset of every
/// connection.
pub fn tcp_echo_server(corrupt_after: Option<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut offset = 0;
                loop {
                    let n = match stream.read(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if let Some(at) = corrupt_after
                        && (offset..offset + n).contains(&at)
                    {
                        buf[at - offset] ^= 0xff;
                    }
                    offset += n;
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A WebSocket echo server (tungstenite's); with `corrupt_after`, every connection flips one
/// byte of the payload of that message (counted from 0) and of every one after it.
pub fn ws_echo_server(corrupt_after: Option<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let Ok(mut socket) = tungstenite::accept(stream) else {
                    return;
                };
                let mut n = 0;
                loop {
                    let message = match socket.read() {
                        Err(tungstenite::Error::Io(e))
                            if e.kind() == std::io::ErrorKind::Interrupted =>
                        {
                            continue;
                        }
                        Err(_) => return,
                        Ok(m) => m,
                    };
                    let echo = match message {
                        tungstenite::Message::Binary(b) => {
                            let mut b = b.to_vec();
                            if corrupt_after.is_some_and(|at| n >= at) && !b.is_empty() {
                                b[0] ^= 0xff;
                            }
                            tungstenite::Message::binary(b)
                        }
                        tungstenite::Message::Text(t) => tungstenite::Message::Text(t),
                        _ => continue,
                    };
                    n += 1;
                    if socket.send(echo).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A WebSocket room (tungstenite's): every text message from any client goes to every client,
/// the sender included, in the order the room took them. With `skip_every`, the message
/// numbered that many (counted from 1, for the room) is not sent to the first client to join.
pub fn ws_room_server(skip_every: Option<usize>) -> SocketAddr {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let members: Arc<Mutex<Vec<mpsc::Sender<tungstenite::Utf8Bytes>>>> = Arc::default();
    let count = Arc::new(Mutex::new(0usize));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (members, count) = (Arc::clone(&members), Arc::clone(&count));
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                // The handshake blocks (a short timeout would fail it on a slow loopback); the
                // session then polls its socket every millisecond for what the room sends.
                let Ok(mut socket) = tungstenite::accept(stream) else {
                    return;
                };
                let _ = socket
                    .get_ref()
                    .set_read_timeout(Some(std::time::Duration::from_millis(1)));
                let (tx, rx) = mpsc::channel();
                members.lock().expect("members").push(tx);
                loop {
                    match socket.read() {
                        Ok(tungstenite::Message::Text(t)) => {
                            // The count and the sends under one lock: one order for all.
                            let mut n = count.lock().expect("count");
                            *n += 1;
                            let members = members.lock().expect("members");
                            for (i, m) in members.iter().enumerate() {
                                if i == 0 && skip_every.is_some_and(|k| *n % k == 0) {
                                    continue;
                                }
                                let _ = m.send(t.clone());
                            }
                        }
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e))
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) => {}
                        Err(_) => return,
                    }
                    while let Ok(t) = rx.try_recv() {
                        if socket.write(tungstenite::Message::Text(t)).is_err() {
                            return;
                        }
                    }
                    if socket.flush().is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A UDP echo server that drops every `drop_every`-th datagram (0: none).
pub fn udp_echo_server(drop_every: usize) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut n = 0usize;
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            n += 1;
            if drop_every > 0 && n.is_multiple_of(drop_every) {
                continue;
            }
            let _ = socket.send_to(&buf[..len], from);
        }
    });
    addr
}
