//! The TechEmpower plaintext and json app on coring: one SO_REUSEPORT listener per core;
//! HTTPS with `--tls-cert PEM --tls-key PEM` (Linux builds).
//!
//! `cargo run --release -p coring-benches --bin coring-tfb -- --addr 127.0.0.1:8080`

use std::sync::Arc;

use coring::net::TcpListener;
use coring_protocols::serve::Server;

fn main() {
    let args = coring_cli::server_args_tls("coring-tfb", "TechEmpower plaintext and json", 8080);
    let tls = tls_config(&args);
    let runtime = coring_cli::server_runtime("coring-tfb", &args);
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind(
            "coring-tfb",
            &core,
            args.addr,
            TcpListener::bind_reuseport,
            |l| Some(l.local_addr()),
        );
        let tls = tls.clone();
        async move {
            let Some(listener) = listener else {
                return;
            };
            let server = Server::new(coring_benches::tfb);
            match tls {
                #[cfg(target_os = "linux")]
                Some(config) => {
                    let acceptor = coring_protocols::tls::TlsAcceptor::new(config);
                    server.serve_tls(listener, acceptor).await;
                }
                #[cfg(not(target_os = "linux"))]
                Some(never) => match never {},
                None => server.serve(listener).await,
            }
        }
    });
    startup.exit("coring-tfb", result);
}

/// The server configuration from `--tls-cert` and `--tls-key`, if given; exits 2 with the
/// reason if they do not load.
#[cfg(target_os = "linux")]
fn tls_config(
    args: &coring_cli::ServerArgs,
) -> Option<Arc<coring_protocols::tls::rustls::ServerConfig>> {
    let files = args.tls.as_ref()?;
    match coring_protocols::tls::server_config_from_pem(&files.cert, &files.key) {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            eprintln!("coring-tfb: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn tls_config(args: &coring_cli::ServerArgs) -> Option<NoTls> {
    if args.tls.is_some() {
        eprintln!("coring-tfb: TLS is built on Linux only");
        std::process::exit(2);
    }
    None
}

/// No TLS in this build: no value, so the match on it needs no arm.
#[cfg(not(target_os = "linux"))]
#[derive(Clone)]
enum NoTls {}
