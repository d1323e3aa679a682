//! The TechEmpower plaintext and json app on coring: one SO_REUSEPORT listener per core.
//!
//! `cargo run --release -p coring-benches --bin coring-tfb -- --addr 127.0.0.1:8080`

use std::sync::Arc;

use coring::net::TcpListener;
use coring_protocols::serve::Server;

fn main() {
    let args = coring_cli::server_args("coring-tfb", "TechEmpower plaintext and json", 8080);
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
        async move {
            let Some(listener) = listener else {
                return;
            };
            Server::new(coring_benches::tfb).serve(listener).await;
        }
    });
    startup.exit("coring-tfb", result);
}
