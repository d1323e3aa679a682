//! The `bench-server` command line, shared by the `bench-server` binary and `suite bench-server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{self as servers, App, ServerConfig};

/// Usage text.
const USAGE: &str = "bench-server: one server variant of the bench suite

usage: bench-server --variant NAME [--app tfb|echo|ws] [--addr HOST:PORT] [--cores N] [--file PATH]
                    [--tls-cert PEM --tls-key PEM]

  --variant  coring-uring, coring-compat, monoio-uring, monoio-legacy, glommio, tokio-hyper,
             axum-on-coring, raw-uring, nginx, tokio-tungstenite, fastwebsockets
  --app      tfb: /plaintext, /json (and /static with --file); echo: TCP echo; ws: WebSocket
             echo at / (default tfb)
  --addr     listen address (default 127.0.0.1:8080; port 0 picks a free port)
  --cores    server threads, one SO_REUSEPORT listener each (default 1)
  --file     file served at /static
  --tls-cert serve tfb over TLS with this certificate chain (coring, tokio-hyper, nginx)
  --tls-key  and this private key";

/// `bench-server`'s command line: `args` are the flags (without the program name).
pub fn cli_main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let mut variant = None;
    let mut app = App::Tfb;
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().expect("valid default");
    let mut cores = 1usize;
    let mut file = None;
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut args = args.into_iter();
    let fail = |m: String| {
        eprintln!("bench-server: {m}");
        ExitCode::from(2)
    };
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let Some(value) = args.next() else {
            return fail(format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--variant" => variant = Some(value),
            "--app" => {
                app = match value.as_str() {
                    "tfb" => App::Tfb,
                    "echo" => App::Echo,
                    "ws" => App::Ws,
                    other => return fail(format!("--app: {other:?} is not tfb, echo or ws")),
                }
            }
            "--addr" => match value.parse() {
                Ok(a) => addr = a,
                Err(_) => return fail(format!("--addr: {value:?} is not HOST:PORT")),
            },
            "--cores" => match value.parse() {
                Ok(n) if n > 0 => cores = n,
                _ => return fail(format!("--cores: {value:?} is not a positive number")),
            },
            "--file" => file = Some(PathBuf::from(value)),
            "--tls-cert" => tls_cert = Some(PathBuf::from(value)),
            "--tls-key" => tls_key = Some(PathBuf::from(value)),
            other => return fail(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let Some(variant) = variant else {
        return fail("--variant is required (try --help)".into());
    };
    let tls = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(servers::TlsFiles { cert, key }),
        _ => return fail("--tls-cert and --tls-key go together".into()),
    };
    let listeners = match servers::bind_listeners(addr, cores) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-server: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let bound = listeners[0].local_addr().unwrap_or(addr);
    let config = ServerConfig {
        listeners,
        app,
        file,
        tls,
    };
    // The listeners are open: connections queue in the backlog until each thread accepts.
    servers::announce(bound);
    match servers::serve(&variant, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-server: {variant}: {e}");
            ExitCode::from(1)
        }
    }
}
