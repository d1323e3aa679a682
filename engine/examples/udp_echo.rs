//! UDP echo server: one SO_REUSEPORT socket per core, datagrams received into the core's
//! buffer pool (multishot recvmsg) and sent back in batches with one submission each.
//!
//! `cargo run --release --example udp_echo -- --addr 127.0.0.1:7001 --cores 2`

mod support;

use std::sync::Arc;

use coring::net::UdpSocket;
use coring::runtime::until_shutdown;
use coring::time::timeout;

/// Datagrams echoed per submission at most.
const BATCH: usize = 64;

fn main() {
    let args = support::server_args("udp_echo", "UDP echo server", 7001);
    let runtime = support::server_runtime("udp_echo", &args);
    let startup = Arc::new(support::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let socket = startup.bind(
            "udp_echo",
            &core,
            args.addr,
            UdpSocket::bind_reuseport,
            |s| s.local_addr().ok(),
        );
        async move {
            let Some(socket) = socket else {
                return;
            };
            let mut rx = socket.pooled();
            while let Some(first) = until_shutdown(rx.next()).await {
                let mut batch = Vec::with_capacity(BATCH);
                match first {
                    Ok(d) => batch.push((d.data, d.source)),
                    Err(e) => {
                        tracing::warn!(error = %e, "receive failed");
                        continue;
                    }
                }
                // Whatever else is already here goes out in the same submission.
                while batch.len() < BATCH {
                    match timeout(std::time::Duration::ZERO, rx.next()).await {
                        Ok(Ok(d)) => batch.push((d.data, d.source)),
                        _ => break,
                    }
                }
                for (r, _) in socket.send_many(batch).await {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "send failed");
                    }
                }
            }
        }
    });
    startup.exit("udp_echo", result);
}
