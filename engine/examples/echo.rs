//! TCP echo server, one listener per core (SO_REUSEPORT), multishot accept.
//!
//! `cargo run --release --example echo -- --addr 127.0.0.1:7000 --cores 2`

mod support;

use std::sync::Arc;

use coring::net::{TcpListener, TcpStream};
use coring::runtime::until_shutdown;

/// Read buffer per connection.
const BUF_BYTES: usize = 16 * 1024;

fn main() {
    let args = support::server_args("echo", "TCP echo server", 7000);
    let runtime = support::server_runtime("echo", &args);
    let startup = Arc::new(support::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind("echo", &core, args.addr, TcpListener::bind_reuseport, |l| {
            Some(l.local_addr())
        });
        async move {
            let Some(listener) = listener else {
                return;
            };
            let mut incoming = listener.incoming();
            while let Some(next) = until_shutdown(incoming.next()).await {
                match next {
                    Ok(stream) => {
                        coring::spawn_local(echo(stream));
                    }
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                }
            }
        }
    });
    if let Err(e) = result {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(BUF_BYTES);
    loop {
        buf.clear();
        // An idle connection closes at shutdown; one mid-message finishes its echo first.
        let Some((result, back)) = until_shutdown(stream.read(buf)).await else {
            return;
        };
        buf = back;
        match result {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (result, back) = stream.write_all(buf).await;
        buf = back;
        if result.is_err() {
            return;
        }
    }
}
