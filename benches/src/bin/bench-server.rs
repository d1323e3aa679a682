//! One server variant of the suite: `bench-server --variant NAME --app tfb|echo`.
//!
//! Variants: coring-uring, coring-compat, monoio-uring, monoio-legacy, glommio, tokio-hyper,
//! axum-on-coring, raw-uring. Follows the binaries convention: `--addr HOST:PORT` (port 0
//! picks one), `--cores N`, one `listening on HOST:PORT` line when ready; `--file PATH` is
//! served at `/static`.

use std::process::ExitCode;

fn main() -> ExitCode {
    coring_benches::servers::cli::cli_main(std::env::args().skip(1))
}
