//! Memory per idle TLS connection on one server core: 10,000 clients (a child process running
//! blocking rustls clients) finish a TLS 1.3 handshake each and then say nothing; each server
//! session waits in `TlsStream::recv`. Resident and heap growth from before the clients
//! connected to when every session waits (as `idle_conns` measures plain connections).
//!
//! `cargo run --release -p coring-benches --example tls_idle [-- CONNECTIONS]`

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use coring::net::TcpListener;
use coring::runtime::Runtime;
use coring_benches::measure::{Counting, LIVE, raise_fd_limit, rss_bytes};
use coring_protocols::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use coring_protocols::tls::{TlsAcceptor, rustls};

#[global_allocator]
static GLOBAL: Counting = Counting;

const CLIENT_FLAG: &str = "--tls-idle-clients";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CLIENT_FLAG) {
        clients(&args[2..]);
        return;
    }
    let conns: usize = args
        .get(1)
        .map(|a| a.parse().expect("CONNECTIONS must be a number"))
        .unwrap_or(10_000);
    raise_fd_limit(conns + 256);

    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let ca_path = std::env::temp_dir().join(format!("coring-tls-idle-{}.der", std::process::id()));
    std::fs::write(&ca_path, cert.der()).expect("write the certificate");
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let config = Arc::new(config);

    let rt = Runtime::builder().build().expect("runtime");
    let shutdown = rt.shutdown_handle();
    let port = Arc::new(AtomicU16::new(0));
    let ready = Arc::new(AtomicUsize::new(0));
    let (p, r) = (port.clone(), ready.clone());
    let server = std::thread::spawn(move || {
        rt.run(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            p.store(listener.local_addr().port(), Ordering::Release);
            let acceptor = TlsAcceptor::new(Arc::clone(&config));
            let r = r.clone();
            async move {
                let mut incoming = listener.incoming();
                while let Some(Ok(stream)) = coring::runtime::until_shutdown(incoming.next()).await
                {
                    let (acceptor, r) = (acceptor.clone(), r.clone());
                    coring::spawn_local(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        r.fetch_add(1, Ordering::Release);
                        while let Ok(Some(_)) = tls.recv().await {}
                    });
                }
            }
        })
        .expect("server");
    });
    while port.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    let (rss0, heap0) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg(CLIENT_FLAG)
        .arg(port.load(Ordering::Acquire).to_string())
        .arg(conns.to_string())
        .arg(&ca_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("client process");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("clients ready");
    while ready.load(Ordering::Acquire) < conns {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let every session reach its wait (and the tickets go out).
    std::thread::sleep(Duration::from_millis(300));
    let (rss1, heap1) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    println!(
        "tls_idle: {conns} idle TLS 1.3 connections: {:.0} B resident and {:.0} B heap per connection",
        (rss1 - rss0) as f64 / conns as f64,
        (heap1 - heap0) as f64 / conns as f64
    );
    drop(child.stdin.take());
    let _ = child.wait();
    shutdown.shutdown();
    server.join().expect("server");
    let _ = std::fs::remove_file(ca_path);
}

/// The child: `conns` blocking rustls clients, each through its handshake (and the session
/// tickets that follow it), held until stdin closes.
fn clients(args: &[String]) {
    let port: u16 = args[0].parse().expect("port");
    let conns: usize = args[1].parse().expect("count");
    let ca = CertificateDer::from(std::fs::read(&args[2]).expect("certificate"));
    raise_fd_limit(conns + 64);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut held = Vec::with_capacity(conns);
    for _ in 0..conns {
        let name = ServerName::try_from("localhost").expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::clone(&config), name).expect("client");
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).expect("handshake");
        }
        held.push((conn, tcp));
    }
    println!("connected");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
