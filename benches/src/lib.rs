//! coring-benches: what coring is measured with.
//!
//! - `coring-tfb` (binary): the TechEmpower plaintext and json endpoints on every core,
//!   following the binaries convention of the project (`--addr`, `--cores`, `--driver`).
//! - `benches/http1_codec.rs` (criterion): the HTTP/1.1 codec beside bare httparse.
//!
//! - `measure`: the counting allocator and idle-connection harness the measurement examples
//!   (`echo_allocs`, `idle_conns`, `http_allocs`, `http_idle`) share.
//!
//! The side-by-side suite with peer servers and the load generator lands with their issues.

pub mod measure;
pub mod servers;
#[cfg(target_os = "linux")]
pub mod suite;

use coring_protocols::http1::{Request, Response};
use serde::Serialize;

/// The body of `/plaintext`.
pub const PLAINTEXT: &[u8] = b"Hello, World!";

/// The `/json` message.
#[derive(Debug, Serialize)]
pub struct Message {
    /// Always "Hello, World!".
    pub message: &'static str,
}

/// Answers the TechEmpower endpoints: headers composed per response, JSON serialised per
/// request (as the rules require).
pub async fn tfb(req: Request) -> Response {
    tfb_response(req.path())
}

/// The TechEmpower answer for `path`: `/plaintext`, `/json`, or 404.
pub fn tfb_response(path: &str) -> Response {
    match path {
        "/plaintext" => Response::new(200)
            .header("Content-Type", "text/plain")
            .body(PLAINTEXT),
        "/json" => {
            let body = serde_json::to_vec(&Message {
                message: "Hello, World!",
            })
            .unwrap_or_default();
            Response::new(200)
                .header("Content-Type", "application/json")
                .body(body)
        }
        _ => Response::new(404),
    }
}
