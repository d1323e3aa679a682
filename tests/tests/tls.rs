//! TLS on engine streams over real loopback sockets, both drivers: `openssl s_client` (TLS 1.2
//! and 1.3, ALPN, SNI, the certificate checked against a CA made for the test) against our
//! acceptor; our connector against our acceptor (a megabyte each way, a clean close, a close
//! without close_notify, an untrusted CA and a wrong name refused); hostile clients (plaintext
//! instead of a ClientHello, a handshake that never comes) failing alone while others are served.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use coring::net::{TcpListener, TcpStream};
use coring_protocols::tls::rustls::pki_types::{CertificateDer, ServerName};
use coring_protocols::tls::{TlsAcceptor, TlsConnector, TlsError, TlsStream, rustls};

use coring_tests::pki::Pki;

fn pki() -> Pki {
    Pki::new(&["localhost"])
}

fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    pki.server_config(&[b"http/1.1"])
}

fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    Arc::new(config)
}

/// What the server saw of one connection.
#[derive(Debug)]
struct Seen {
    handshake: Result<(Option<Vec<u8>>, Option<String>), String>,
    resumed: bool,
}

/// A TLS server on its own core: each connection echoes what it reads until the client's
/// close_notify, then closes (or, with `once`, closes after the first echo). Reports each
/// connection's handshake.
struct EchoServer {
    addr: SocketAddr,
    seen: mpsc::Receiver<Seen>,
    shutdown: coring::ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn echo_server(config: Arc<rustls::ServerConfig>, once: bool) -> EchoServer {
    let rt = coring::Runtime::builder()
        .shutdown_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let shutdown = rt.shutdown_handle();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (seen_tx, seen) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        rt.run(move |_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            addr_tx.send(listener.local_addr()).unwrap();
            let acceptor =
                TlsAcceptor::new(Arc::clone(&config)).handshake_timeout(Duration::from_millis(500));
            let seen_tx = seen_tx.clone();
            async move {
                let mut incoming = listener.incoming();
                while let Some(Ok(stream)) = coring::runtime::until_shutdown(incoming.next()).await
                {
                    let (acceptor, seen_tx) = (acceptor.clone(), seen_tx.clone());
                    coring::spawn_local(async move {
                        let tls = match acceptor.accept(stream).await {
                            Ok(tls) => tls,
                            Err(e) => {
                                let _ = seen_tx.send(Seen {
                                    handshake: Err(e.to_string()),
                                    resumed: false,
                                });
                                return;
                            }
                        };
                        let _ = seen_tx.send(Seen {
                            handshake: Ok((tls.alpn_protocol(), tls.server_name())),
                            resumed: tls.is_resumed(),
                        });
                        echo(&tls, once).await;
                    });
                }
            }
        })
        .unwrap();
    });
    EchoServer {
        addr: addr_rx.recv().unwrap(),
        seen,
        shutdown,
        thread: Some(thread),
    }
}

async fn echo(tls: &TlsStream, once: bool) {
    loop {
        match tls.recv().await {
            Ok(Some(bytes)) => {
                if tls.write_all(&bytes).await.is_err() {
                    return;
                }
                if once {
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let _ = tls.shutdown().await;
}

fn write_ca(pki: &Pki) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("coring-tls-ca-{}-{n}.pem", std::process::id()));
    std::fs::write(&path, &pki.ca_pem).unwrap();
    path
}

fn s_client(addr: SocketAddr, ca: &PathBuf, version: &str, input: &[u8]) -> (String, String) {
    s_client_with(addr, ca, &[version, "-brief"], input)
}

fn s_client_with(addr: SocketAddr, ca: &PathBuf, args: &[&str], input: &[u8]) -> (String, String) {
    let mut child = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(["-servername", "localhost", "-verify_return_error"])
        .args(["-alpn", "http/1.1", "-ign_eof", "-CAfile"])
        .arg(ca)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (apt install openssl)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[coring::test]
fn openssl_s_client_over_tls_1_2_and_1_3_with_alpn_and_sni() {
    let pki = pki();
    let ca = write_ca(&pki);
    let server = echo_server(server_config(&pki), true);
    for (flag, name) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (out, err) = s_client(server.addr, &ca, flag, b"hello over tls\n");
        assert!(
            out.contains("hello over tls"),
            "{flag}: stdout {out:?} stderr {err}"
        );
        assert!(err.contains(name), "{flag}: {err}");
        let seen = server.seen.recv_timeout(Duration::from_secs(5)).unwrap();
        let (alpn, sni) = seen.handshake.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(sni.as_deref(), Some("localhost"));
    }
    let _ = std::fs::remove_file(ca);
}

/// Our client: connects, checks the name against `roots`.
async fn dial(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    name: &str,
) -> Result<TlsStream, TlsError> {
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    TlsConnector::new(client_config(roots))
        .connect(name, stream)
        .await
}

#[coring::test]
async fn a_megabyte_each_way_then_a_clean_close() {
    let pki = pki();
    let server = echo_server(server_config(&pki), false);
    let tls = dial(server.addr, std::slice::from_ref(&pki.ca), "localhost")
        .await
        .unwrap();
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut back = Vec::new();
    let mut sent = 0;
    // Writes in pieces and reads as it goes, so that neither side's socket fills.
    while back.len() < data.len() {
        if sent < data.len() {
            let end = (sent + 64 * 1024).min(data.len());
            tls.write_all(&data[sent..end]).await.unwrap();
            sent = end;
        }
        while back.len() < sent {
            let (n, buf) = tls.read(std::mem::take(&mut back)).await;
            back = buf;
            assert!(n.unwrap() > 0);
        }
    }
    assert!(back == data);
    tls.shutdown().await.unwrap();
    // The server answers our close_notify with its own; nothing goes after ours.
    assert_eq!(tls.recv().await.unwrap(), None);
    assert!(matches!(
        tls.write_all(b"late").await,
        Err(TlsError::Closed)
    ));
    assert!(server.seen.try_recv().unwrap().handshake.is_ok());
}

#[coring::test]
async fn a_close_without_close_notify_is_reported_as_truncation() {
    let pki = pki();
    let config = server_config(&pki);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr();
    let acceptor = TlsAcceptor::new(config);
    let serving = coring::spawn_local(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(stream).await.unwrap();
        tls.write_all(b"partial").await.unwrap();
        // Gone without close_notify: the socket is just closed.
        drop(tls);
    });
    let tls = dial(addr, std::slice::from_ref(&pki.ca), "localhost")
        .await
        .unwrap();
    assert_eq!(tls.recv().await.unwrap().as_deref(), Some(&b"partial"[..]));
    assert!(matches!(tls.recv().await, Err(TlsError::Truncated)));
    serving.await.unwrap();
}

#[coring::test]
async fn an_untrusted_ca_or_a_wrong_name_is_refused_by_the_client() {
    let pki = pki();
    let server = echo_server(server_config(&pki), false);
    // A CA the server's certificate was not signed by.
    let other = self::pki().ca;
    let err = dial(server.addr, &[other], "localhost").await.unwrap_err();
    assert!(matches!(err, TlsError::Tls(_)), "{err}");
    let err = dial(server.addr, std::slice::from_ref(&pki.ca), "example.com")
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Tls(_)), "{err}");
    // The server sees the client's alert, and goes on serving.
    let ok = dial(server.addr, std::slice::from_ref(&pki.ca), "localhost").await;
    assert!(ok.is_ok());
}

#[coring::test]
fn plaintext_instead_of_a_client_hello_and_a_silent_client_fail_alone() {
    let pki = pki();
    let ca = write_ca(&pki);
    let server = echo_server(server_config(&pki), true);
    // An HTTP request where a ClientHello should be: the server sends an alert and closes.
    let mut plain = std::net::TcpStream::connect(server.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&21), "an alert record: {answer:?}");
    let seen = server.seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(seen.handshake.is_err());
    // A client that connects and says nothing is let go at the handshake deadline.
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let seen = server.seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        seen.handshake
            .as_ref()
            .is_err_and(|e| e.contains("timed out")),
        "{seen:?}"
    );
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    // Meanwhile and after, a real client is served.
    let (out, err) = s_client(server.addr, &ca, "-tls1_3", b"still here\n");
    assert!(out.contains("still here"), "{out:?} {err}");
    let _ = std::fs::remove_file(ca);
}

#[coring::test]
fn openssl_resumes_its_session_on_the_second_connection() {
    let pki = pki();
    let ca = write_ca(&pki);
    let server = echo_server(server_config(&pki), true);
    let session = ca.with_extension("session");
    for version in ["-tls1_3", "-tls1_2"] {
        let _ = std::fs::remove_file(&session);
        let out = session.to_str().unwrap();
        let (first, err) = s_client_with(server.addr, &ca, &[version, "-sess_out", out], b"one\n");
        assert!(first.contains("New,"), "{version}: {first} {err}");
        assert!(
            !server
                .seen
                .recv_timeout(Duration::from_secs(5))
                .unwrap()
                .resumed
        );
        let (second, err) = s_client_with(server.addr, &ca, &[version, "-sess_in", out], b"two\n");
        assert!(second.contains("Reused,"), "{version}: {second} {err}");
        assert!(second.contains("two"), "{version}: {second}");
        assert!(
            server
                .seen
                .recv_timeout(Duration::from_secs(5))
                .unwrap()
                .resumed
        );
    }
    let _ = std::fs::remove_file(session);
    let _ = std::fs::remove_file(ca);
}

/// The first bytes a real client sends: its ClientHello.
fn client_hello() -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(client_config(&[]), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[coring::test]
fn random_bytes_and_truncated_client_hellos_are_refused_and_others_served() {
    let pki = pki();
    let ca = write_ca(&pki);
    let server = echo_server(server_config(&pki), true);
    let hello = client_hello();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let clients: Vec<std::thread::JoinHandle<()>> = (0..40)
        .map(|i| {
            let bytes: Vec<u8> = if i % 2 == 0 {
                // A ClientHello cut short, then silence.
                hello[..(next() as usize % hello.len())].to_vec()
            } else {
                (0..1 + next() % 600).map(|_| next() as u8).collect()
            };
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = s.write_all(&bytes);
                // Closed by the server: an alert, or the handshake deadline.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    for _ in 0..40 {
        let seen = server.seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(seen.handshake.is_err(), "{seen:?}");
    }
    let (out, err) = s_client(server.addr, &ca, "-tls1_3", b"after the noise\n");
    assert!(out.contains("after the noise"), "{out:?} {err}");
    let _ = std::fs::remove_file(ca);
}
