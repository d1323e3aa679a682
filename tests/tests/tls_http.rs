//! HTTPS and WSS over real loopback sockets, both drivers. Our HTTP and WebSocket clients
//! against our servers (`Server::serve_tls`) and against independent ones: nginx with OpenSSL
//! serving a file over HTTPS, tungstenite over rustls' blocking stream as a WSS echo server.
//! An independent WSS client (tungstenite over rustls) against our server. Several hosts on
//! one listener, each served its own certificate by SNI. The server core's TLS counters say
//! what happened to the handshakes it refused.
#![cfg(unix)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use coring::net::{TcpListener, TcpStream};
use coring_protocols::client::{Client, ClientConfig, ClientError, ClientRequest};
use coring_protocols::http1::Response;
use coring_protocols::serve::{Router, Server};
use coring_protocols::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use coring_protocols::tls::{self, CertResolver, TlsAcceptor, TlsConnector, rustls};
use coring_protocols::websocket::{self as ws, ConnectOptions, Message, WsConfig};

/// A CA that signs leaf certificates for the names a test asks for.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A leaf certificate and its key, as DER and as PEM files.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        Arc::new(tls::client_config(roots).unwrap())
    }
}

impl Leaf {
    fn certified(&self) -> Arc<rustls::sign::CertifiedKey> {
        let key = PrivateKeyDer::Pkcs8(self.key.clone().into());
        tls::certified_key(self.chain.clone(), key).unwrap()
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::new(tls::server_config(CertResolver::new().default_key(self.certified())).unwrap())
    }
}

/// A directory of its own for a test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("coring-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Our HTTPS server on a core of its own: `/hello`, `/echo` (POST), a WebSocket echo at `/ws`,
/// and `/counters` (the server core's TLS counters).
struct HttpsServer {
    addr: SocketAddr,
    shutdown: coring::ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn https_server(config: Arc<rustls::ServerConfig>) -> HttpsServer {
    let rt = coring::Runtime::builder()
        .shutdown_grace(Duration::from_millis(500))
        .build()
        .unwrap();
    let shutdown = rt.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        rt.run(move |_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr()).unwrap();
            let acceptor =
                TlsAcceptor::new(Arc::clone(&config)).handshake_timeout(Duration::from_millis(400));
            let ws_config = Arc::new(WsConfig::default());
            let router = Router::new()
                .route("GET", "/hello", |_req, _p| async {
                    Response::new(200).body("hello over tls")
                })
                .route("POST", "/echo", |req, _p| async move {
                    let body = match coring_protocols::serve::BodyStream::of(&req) {
                        Some(stream) => stream.read_all(8 << 20).await.unwrap_or_default(),
                        None => req.body().clone(),
                    };
                    Response::new(200).body(body)
                })
                .route("GET", "/counters", |_req, _p| async {
                    let c = tls::counters();
                    Response::new(200).body(format!(
                        "handshakes={} resumed={} timeouts={} eofs={} protocol_errors={}",
                        c.handshakes,
                        c.resumed,
                        c.handshake_timeouts,
                        c.handshake_eofs,
                        c.protocol_errors
                    ))
                })
                .route("GET", "/ws", move |req, _p| {
                    let config = Arc::clone(&ws_config);
                    async move { ws::accept(&req, config, ws_echo) }
                });
            Server::new(router).serve_tls(listener, acceptor)
        })
        .unwrap();
    });
    HttpsServer {
        addr: rx.recv().unwrap(),
        shutdown,
        thread: Some(thread),
    }
}

async fn ws_echo(mut socket: ws::WebSocket) {
    while let Ok(Some(message)) = socket.recv().await {
        if socket.send(&message).await.is_err() {
            return;
        }
    }
}

/// A named counter out of `/counters`.
fn counter(text: &str, name: &str) -> u64 {
    text.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text:?}"))
}

fn client_with(config: Arc<rustls::ClientConfig>) -> Client {
    Client::new(ClientConfig {
        tls: Some(config),
        ..ClientConfig::default()
    })
}

#[coring::test]
async fn our_https_client_against_our_server_keep_alive_uploads_and_refusals() {
    let ca = Ca::new("coring test CA");
    let server = https_server(ca.leaf(&["localhost", "127.0.0.1"]).server_config());
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let client = client_with(ca.client_config());

    let resp = client.get(&format!("{base}/hello")).await.unwrap();
    assert_eq!((resp.status, &resp.body[..]), (200, &b"hello over tls"[..]));
    assert_eq!(client.idle_connections(&base), 1);
    // The second request rides the pooled TLS connection.
    let resp = client.get(&format!("{base}/hello")).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(client.idle_connections(&base), 1);

    // A body of many records, streamed to the handler (over the size read before it runs).
    let body: Vec<u8> = (0..900_000).map(|i: u32| (i % 253) as u8).collect();
    let resp = client
        .send(ClientRequest::new("POST", &format!("{base}/echo")).body(body.clone()))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body[..] == body[..], "the echoed body differs");

    // A client that trusts another CA refuses the server; so does one that wants another name.
    let stranger = client_with(Ca::new("another CA").client_config());
    let refused = stranger.get(&format!("{base}/hello")).await;
    assert!(matches!(refused, Err(ClientError::Tls(_))), "{refused:?}");
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("elsewhere.test").unwrap();
    let wrong_name = TlsConnector::new(ca.client_config())
        .connect(name, stream)
        .await;
    assert!(wrong_name.is_err());

    // Plain HTTP at the TLS listener is refused; the listener keeps serving.
    let plain = Client::default()
        .get(&format!("http://127.0.0.1:{}/hello", server.addr.port()))
        .await;
    assert!(plain.is_err(), "{plain:?}");

    let counters = client.get(&format!("{base}/counters")).await.unwrap();
    let text = String::from_utf8(counters.body.to_vec()).unwrap();
    // The pooled connection and the refusals: one handshake for this client, and every
    // refused one failed as a protocol error (each client's alert, the plaintext request).
    assert_eq!(counter(&text, "handshakes"), 1, "{text}");
    assert!(counter(&text, "protocol_errors") >= 3, "{text}");
}

#[coring::test]
async fn several_hosts_on_one_listener_each_get_their_certificate() {
    let ca = Ca::new("coring test CA");
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["*.b.test"]));
    let resolver = CertResolver::new()
        .add("a.test", a.certified())
        .add("*.b.test", b.certified());
    let server = https_server(Arc::new(tls::server_config(resolver).unwrap()));
    let connector = TlsConnector::new(ca.client_config());
    for name in ["a.test", "www.b.test"] {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        // The client checks the certificate it gets against the name it asked for: only the
        // host's own certificate passes.
        let tls = connector.connect(server_name, stream).await;
        let tls = tls.unwrap_or_else(|e| panic!("{name}: {e}"));
        tls.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while let Some(piece) = tls.recv().await.unwrap() {
            answer.extend_from_slice(&piece);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.ends_with("hello over tls"), "{name}: {answer}");
    }
    // A name the listener has no certificate for (and no default): refused in the handshake.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let unknown = connector
        .connect(ServerName::try_from("c.test").unwrap(), stream)
        .await;
    assert!(unknown.is_err());
}

#[coring::test]
async fn our_websocket_client_over_wss_against_our_server() {
    let ca = Ca::new("coring test CA");
    let server = https_server(ca.leaf(&["127.0.0.1"]).server_config());
    let options = ConnectOptions {
        tls: Some(ca.client_config()),
        ..ConnectOptions::default()
    };
    let url = format!("wss://127.0.0.1:{}/ws", server.addr.port());
    let mut socket = ws::connect_with(&url, &options).await.unwrap();
    let big: Vec<u8> = (0..200_000).map(|i: u32| (i % 241) as u8).collect();
    let messages = [
        Message::Text("over tls".into()),
        Message::Binary(big.into()),
    ];
    for message in &messages {
        socket.send(message).await.unwrap();
        let back = socket.recv().await.unwrap().unwrap();
        assert!(back == *message, "the echo differs");
    }
    socket.close(1000, "done").await.unwrap();
    assert!(socket.recv().await.unwrap().is_none());
}

/// A rustls client stream over a blocking socket, for tungstenite.
fn rustls_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

#[coring::test]
fn tungstenite_over_rustls_against_our_wss_server() {
    let ca = Ca::new("coring test CA");
    let server = https_server(ca.leaf(&["localhost"]).server_config());
    let stream = rustls_client(server.addr, ca.client_config(), "localhost");
    let (mut socket, answer) = tungstenite::client("wss://localhost/ws", stream).unwrap();
    assert_eq!(answer.status(), 101);
    for n in [5usize, 70_000] {
        let payload: Vec<u8> = (0..n).map(|i| (i % 199) as u8).collect();
        socket
            .send(tungstenite::Message::binary(payload.clone()))
            .unwrap();
        match socket.read().unwrap() {
            tungstenite::Message::Binary(back) => assert!(back[..] == payload[..]),
            other => panic!("{other:?}"),
        }
    }
    socket.close(None).unwrap();
    // Our close answers theirs; then the stream ends.
    loop {
        match socket.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

/// tungstenite over rustls' blocking server stream: a WSS echo server that is not ours.
fn independent_wss_echo(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let stream = rustls::StreamOwned::new(conn, sock);
                let Ok(mut socket) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(message) = socket.read() {
                    if (message.is_text() || message.is_binary()) && socket.send(message).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[coring::test]
async fn our_websocket_client_over_wss_against_tungstenite() {
    let ca = Ca::new("coring test CA");
    let addr = independent_wss_echo(ca.leaf(&["localhost"]).server_config());
    let options = ConnectOptions {
        tls: Some(ca.client_config()),
        ..ConnectOptions::default()
    };
    // `localhost` names the certificate; the socket goes to the echo server's address.
    let url = format!("wss://localhost:{}/", addr.port());
    let mut socket = ws::connect_with(&url, &options)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    for message in [
        Message::Text("hello tungstenite".into()),
        Message::Binary(vec![7u8; 50_000].into()),
    ] {
        socket.send(&message).await.unwrap();
        assert!(socket.recv().await.unwrap().unwrap() == message);
    }
}

/// nginx serving `root` over HTTPS on a free loopback port, as a child process.
struct Nginx {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_https(leaf: &Leaf, root: &Path) -> Nginx {
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("nginx (apt install nginx)");
    let dir = TempDir::new("nginx-https");
    let cert = dir.write("cert.pem", &leaf.cert_pem);
    let key = dir.write("key.pem", &leaf.key_pem);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.0.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
           fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
           server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {};\n\
             ssl_protocols TLSv1.2 TLSv1.3; root {}; }} }}\n",
        cert.display(),
        key.display(),
        root.display()
    );
    let conf_path = dir.write("nginx.conf", conf);
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nginx");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start: {}",
            std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        child,
        port,
        _dir: dir,
    }
}

#[coring::test]
fn our_https_client_against_nginx() {
    let ca = Ca::new("coring test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let files = TempDir::new("nginx-root");
    let data: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    files.write("file.bin", &data);
    let nginx = nginx_https(&leaf, &files.0);
    let base = format!("https://127.0.0.1:{}", nginx.port);
    let client_config = ca.client_config();
    let (got, missing, pooled) = coring::block_on(async move {
        let client = client_with(client_config);
        let got = client.get(&format!("{base}/file.bin")).await.unwrap();
        let missing = client.get(&format!("{base}/nothing")).await.unwrap();
        (got, missing.status, client.idle_connections(&base))
    });
    assert_eq!(got.status, 200);
    assert!(got.body[..] == data[..], "the file came back different");
    assert_eq!(missing, 404);
    assert_eq!(pooled, 1, "both requests on one kept-alive connection");
}

#[coring::test]
async fn hostile_clients_are_counted_and_the_listener_keeps_serving() {
    use coring::time::sleep;
    let ca = Ca::new("coring test CA");
    let server = https_server(ca.leaf(&["127.0.0.1"]).server_config());
    // One that never sends its ClientHello, one that sends garbage, one that leaves half way.
    let silent = TcpStream::connect(server.addr).await.unwrap();
    let garbage = TcpStream::connect(server.addr).await.unwrap();
    let (r, _) = garbage
        .write_all(vec![0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await;
    r.unwrap();
    let leaving = TcpStream::connect(server.addr).await.unwrap();
    let (r, _) = leaving
        .write_all(vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01])
        .await;
    r.unwrap();
    drop(leaving);
    // Past the handshake deadline (400 ms).
    sleep(Duration::from_millis(700)).await;
    let client = client_with(ca.client_config());
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let text = client.get(&format!("{base}/counters")).await.unwrap();
    let text = String::from_utf8(text.body.to_vec()).unwrap();
    assert_eq!(counter(&text, "handshakes"), 1, "{text}");
    assert_eq!(counter(&text, "timeouts"), 1, "{text}");
    assert_eq!(counter(&text, "eofs"), 1, "{text}");
    assert_eq!(counter(&text, "protocol_errors"), 1, "{text}");
    // The silent one was closed by the server.
    let (got, _) = silent.read(Vec::with_capacity(64)).await;
    assert_eq!(got.unwrap(), 0);
    drop(garbage);
}

/// A PROXY header in front of TLS, in the clear: whole before the handshake, sharing one
/// write with the ClientHello, or in pieces; every request on the decrypted stream carries
/// the client it names.
#[coring::test]
fn a_proxy_header_before_the_handshake_names_the_client() {
    use std::io::Write;

    use coring_protocols::serve::{Config, ProxyProtocol};

    let ca = Ca::new("coring test CA");
    let config = ca.leaf(&["localhost"]).server_config();
    let rt = coring::Runtime::builder()
        .shutdown_grace(Duration::from_millis(500))
        .build()
        .unwrap();
    let shutdown = rt.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        rt.run(move |_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr()).unwrap();
            let acceptor = TlsAcceptor::new(Arc::clone(&config));
            let router = Router::new().route("GET", "/", |req, _p| async move {
                Response::new(200).body(format!("{:?}", req.client_addr()))
            });
            let config = Config {
                proxy_protocol: Some(ProxyProtocol::trusting(vec![
                    "127.0.0.0/8".parse().unwrap(),
                ])),
                ..Config::default()
            };
            Server::new(router)
                .config(config)
                .serve_tls(listener, acceptor)
        })
        .unwrap();
    });
    let addr = rx.recv().unwrap();
    let client: SocketAddr = "203.0.113.7:40001".parse().unwrap();
    let mut header = Vec::new();
    coring_protocols::proxy::encode_v2(Some((client, addr)), &mut header);

    for how in ["alone", "with the hello", "in pieces"] {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
        match how {
            "alone" => sock.write_all(&header).unwrap(),
            "with the hello" => {
                let mut first = header.clone();
                conn.write_tls(&mut first).unwrap();
                sock.write_all(&first).unwrap();
            }
            _ => {
                for piece in header.chunks(7) {
                    sock.write_all(piece).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let mut tls = rustls::StreamOwned::new(conn, sock);
        for last in [false, true] {
            let close = if last { "Connection: close\r\n" } else { "" };
            write!(tls, "GET / HTTP/1.1\r\nHost: localhost\r\n{close}\r\n").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains(&client.to_string()) {
                let n = coring_tests::read_some(&mut tls, &mut buf).unwrap();
                assert!(
                    n > 0,
                    "{how}: closed with {:?}",
                    String::from_utf8_lossy(&got)
                );
                got.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 200"), "{how}: {text}");
        }
    }
    shutdown.shutdown();
    thread.join().unwrap();
}
