//! The binaries convention (`coring_cli`: arguments, runtime with logging, start-up), as the
//! examples use it.

#![allow(
    dead_code,
    unused_imports,
    reason = "each example uses the part it needs"
)]

pub use coring_cli::{ServerArgs, Startup, init_logging, server_args, server_runtime};
