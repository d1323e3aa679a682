//! TCP echo server, one listener per core (SO_REUSEPORT), multishot accept, pooled receives
//! (multishot recv into the core's provided-buffer ring).
//!
//! `cargo run --release --example echo -- --addr 127.0.0.1:7000 --cores 2`

mod support;

use std::sync::Arc;

use coring::net::{TcpListener, TcpStream};
use coring::runtime::until_shutdown;

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
            let mut failures = coring::net::AcceptFailures::new();
            while let Some(next) = until_shutdown(incoming.next()).await {
                match next {
                    Ok(stream) => {
                        coring::spawn_local(echo(stream));
                    }
                    Err(e) => failures.handle(&e).await,
                }
            }
        }
    });
    startup.exit("echo", result);
}

async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // Bytes land in the core's buffer pool when they arrive, and the same buffer is written
    // back: an idle connection holds no buffer at all.
    let mut incoming = stream.pooled();
    loop {
        // An idle connection closes at shutdown; one mid-message finishes its echo first.
        let Some(next) = until_shutdown(incoming.next()).await else {
            return;
        };
        let buf = match next {
            Ok(Some(buf)) => buf,
            Ok(None) | Err(_) => return,
        };
        if stream.write_all(buf).await.0.is_err() {
            return;
        }
    }
}
