//! Answers `GET /` with the client address it sees, as text (`203.0.113.9:40000\n`). Behind a
//! load balancer that speaks the PROXY protocol (HAProxy's `send-proxy` or `send-proxy-v2`),
//! `--proxy-protocol TRUSTED` makes every connection start with a header from one of the
//! TRUSTED networks (comma-separated, `127.0.0.1/32,10.0.0.0/8`), and the address it names is
//! the one answered. Connections from elsewhere, or without a well-formed header, are closed;
//! `GET /stats` counts them, and `GET /metrics` gives every core's counters in the Prometheus
//! text format. With `--tls-cert PEM --tls-key PEM` (built with the `tls` feature) it serves
//! HTTPS, and behind a PROXY balancer relaying TLS in TCP mode the header comes first, in the
//! clear. `--capture FILE` writes what it reads and writes to a pcapng file for Wireshark or
//! `tshark`. Binaries convention (`--addr`, `--cores`, `--driver`, one `listening on HOST:PORT`
//! line, exit 0 on SIGTERM, restart on SIGHUP).
//!
//! `cargo run --release -p coring-protocols --example whoami -- --addr 127.0.0.1:9003
//! --proxy-protocol 127.0.0.1/32`

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use coring::net::TcpListener;
use coring_cli::ExtraFlag;
use coring_protocols::cidr::Cidr;
use coring_protocols::http1::Response;
use coring_protocols::metrics;
use coring_protocols::serve::{self, Config, ProxyProtocol, Router, Server};

fn main() {
    let args = coring_cli::server_args_tls_with(
        "whoami",
        "Answers GET / with the client's address",
        9003,
        &[
            ExtraFlag {
                flag: "--proxy-protocol",
                env: "CORING_PROXY_PROTOCOL",
                value: "TRUSTED",
                help: "read a PROXY protocol header (v1 or v2) from these networks (comma-separated CIDRs) first",
            },
            ExtraFlag {
                flag: "--capture",
                env: "CORING_CAPTURE",
                value: "FILE",
                help: "write the traffic to FILE in pcapng (Wireshark, tshark)",
            },
        ],
    );
    let proxy = args.extra("--proxy-protocol").map(|list| {
        let trusted = list
            .split(',')
            .map(|net| {
                net.parse::<Cidr>().unwrap_or_else(|e| {
                    coring_cli::bad_flag("whoami", &format!("--proxy-protocol: {e}"))
                })
            })
            .collect();
        ProxyProtocol::trusting(trusted)
    });
    let capture = args.extra("--capture").map(|path| {
        coring_protocols::capture::Capture::to_file(path)
            .unwrap_or_else(|e| coring_cli::bad_flag("whoami", &format!("--capture {path}: {e}")))
    });
    let config = Config {
        client_addr: true,
        proxy_protocol: proxy,
        capture: capture.clone(),
        ..Config::default()
    };
    let tls = tls_config(&args);
    let runtime = coring_cli::server_runtime("whoami", &args);
    let stats = runtime.stats_handle();
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind("whoami", &core, args.addr, TcpListener::bind_reuseport, |l| {
            Some(l.local_addr())
        });
        let config = config.clone();
        let stats = stats.clone();
        let tls = tls.clone();
        async move {
            let Some(listener) = listener else {
                return;
            };
            let router = Router::new()
                .route("GET", "/", |req, _params| async move {
                    match req.client_addr() {
                        Some(addr) => Response::new(200).body(format!("{addr}\n")),
                        None => Response::new(500).body("no client address\n"),
                    }
                })
                .route("GET", "/stats", |_req, _params| async {
                    let c = serve::proxy_counters();
                    Response::new(200).body(format!(
                        "accepted={} local={} untrusted={} missing={} malformed={} cut_short={} timed_out={}\n",
                        c.accepted.load(Relaxed),
                        c.local.load(Relaxed),
                        c.untrusted.load(Relaxed),
                        c.missing.load(Relaxed),
                        c.malformed.load(Relaxed),
                        c.cut_short.load(Relaxed),
                        c.timed_out.load(Relaxed),
                    ))
                });
            let router = metrics::route(router, "/metrics", stats);
            let server = Server::new(router).config(config);
            match tls {
                #[cfg(feature = "tls")]
                Some(tls) => {
                    let acceptor = coring_protocols::tls::TlsAcceptor::new(tls);
                    server.serve_tls(listener, acceptor).await;
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match never {},
                None => server.serve(listener).await,
            }
        }
    });
    // The capture's last records are written before the process ends.
    drop(config);
    if let Some(capture) = capture {
        capture.finish();
    }
    startup.exit("whoami", result);
}

/// The server configuration from `--tls-cert` and `--tls-key`, if given; exits 2 with the
/// reason if they do not load.
#[cfg(feature = "tls")]
fn tls_config(
    args: &coring_cli::ServerArgs,
) -> Option<Arc<coring_protocols::tls::rustls::ServerConfig>> {
    let files = args.tls.as_ref()?;
    match coring_protocols::tls::server_config_from_pem(&files.cert, &files.key) {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            eprintln!("whoami: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(not(feature = "tls"))]
fn tls_config(args: &coring_cli::ServerArgs) -> Option<NoTls> {
    if args.tls.is_some() {
        eprintln!("whoami: built without TLS (cargo build --features tls)");
        std::process::exit(2);
    }
    None
}

/// No TLS in this build: no value, so the match on it needs no arm.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum NoTls {}
