//! Logging for the examples; the binaries convention itself is `coring_cli`.

#![allow(
    dead_code,
    unused_imports,
    reason = "each example uses the part it needs"
)]

pub use coring_cli::{ServerArgs, Startup, server_args};

/// Sets up logging and a runtime for the server binary `name`.
pub fn server_runtime(name: &str, args: &ServerArgs) -> coring::Runtime {
    init_logging();
    coring_cli::server_runtime(name, args)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
