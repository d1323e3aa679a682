//! The crypto provider, chosen by measurement: ring against aws-lc-rs under rustls, in one
//! process and interleaved. Full TLS 1.3 handshakes in memory (ECDSA P-256 certificate, each
//! provider's default key exchange, no resumption), timed on the server's side only; then the
//! server's record encryption (AES-256-GCM, 16 KiB writes).
//!
//! `taskset -c 1 cargo run --release -p coring-benches --example tls_providers`

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const HANDSHAKES: usize = 2000;
const ROUNDS: usize = 5;

fn configs(
    provider: Arc<CryptoProvider>,
    cert: &rcgen::CertifiedKey,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .expect("certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

/// Server handshakes per second of server time, and the server's encryption in MB/s.
fn measure(provider: Arc<CryptoProvider>, cert: &rcgen::CertifiedKey) -> (f64, f64) {
    let (server_config, client_config) = configs(provider, cert);
    let mut server_time = Duration::ZERO;
    let mut wire = Vec::new();
    let mut last = None;
    for _ in 0..HANDSHAKES {
        let name = ServerName::try_from("a.test").expect("name");
        let mut client =
            rustls::ClientConnection::new(Arc::clone(&client_config), name).expect("client");
        let t = Instant::now();
        let mut server = rustls::ServerConnection::new(Arc::clone(&server_config)).expect("server");
        server_time += t.elapsed();
        while client.is_handshaking() || server.is_handshaking() || server.wants_write() {
            wire.clear();
            while client.wants_write() {
                client.write_tls(&mut wire).expect("client writes");
            }
            let t = Instant::now();
            if !wire.is_empty() {
                server.read_tls(&mut &wire[..]).expect("server reads");
                server.process_new_packets().expect("server handshake");
            }
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).expect("server writes");
            }
            server_time += t.elapsed();
            if !wire.is_empty() {
                client.read_tls(&mut &wire[..]).expect("client reads");
                client.process_new_packets().expect("client handshake");
            }
        }
        last = Some(server);
    }
    let mut server = last.expect("a handshake");
    let record = vec![7u8; 16 * 1024];
    let mut out = Vec::with_capacity(1 << 20);
    let writes = 4096;
    let t = Instant::now();
    for _ in 0..writes {
        server.writer().write_all(&record).expect("plaintext");
        out.clear();
        while server.wants_write() {
            server.write_tls(&mut out).expect("records");
        }
    }
    let mb = (writes * record.len()) as f64 / 1e6;
    (
        HANDSHAKES as f64 / server_time.as_secs_f64(),
        mb / t.elapsed().as_secs_f64(),
    )
}

/// A provider's name and its constructor.
type Provider = (&'static str, fn() -> CryptoProvider);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let cert = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).expect("cert");
    let providers: [Provider; 2] = [
        ("ring", rustls::crypto::ring::default_provider),
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider),
    ];
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); 2];
    for _ in 0..ROUNDS {
        for (i, (_, make)) in providers.iter().enumerate() {
            let (hs, mbs) = measure(Arc::new(make()), &cert);
            results[i].0.push(hs);
            results[i].1.push(mbs);
        }
    }
    for ((name, _), (hs, mbs)) in providers.iter().zip(results) {
        println!(
            "tls_providers: {name:<10} {:>7.0} server handshakes/s  {:>6.0} MB/s AES-256-GCM (medians of {ROUNDS})",
            median(hs),
            median(mbs)
        );
    }
}
