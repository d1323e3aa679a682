//! An axum `Router` served by hyper on coring cores: one listener per core (`SO_REUSEPORT`),
//! each connection served by hyper's HTTP/1 server in a task on the core that accepted it.
//! Routes: `GET /plaintext` (TechEmpower's), `GET /json`, `GET /rooms/{id}` (a path parameter,
//! a query string and a header read), `POST /echo` (the body back, up to 1 MiB: larger is
//! 413), and `GET /count` (requests this core has counted: axum's state is `Send`, so a
//! per-core atomic; a hyper service of one's own may hold `Rc` state instead). Binaries convention (`--addr`, `--cores`,
//! `--driver`, one `listening on HOST:PORT` line, exit 0 on SIGTERM, restart on SIGHUP).
//!
//! `cargo run --release -p coring-protocols --features hyper --example axum_hello -- --addr
//! 127.0.0.1:9004`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use coring::net::TcpListener;
use coring_protocols::hyper_rt::{self, TowerService};

fn main() {
    let args = coring_cli::server_args("axum_hello", "An axum Router on coring cores", 9004);
    let runtime = coring_cli::server_runtime("axum_hello", &args);
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind(
            "axum_hello",
            &core,
            args.addr,
            TcpListener::bind_reuseport,
            |l| Some(l.local_addr()),
        );
        async move {
            let Some(listener) = listener else {
                return;
            };
            // One per core, touched by this core's connections only.
            let served = Arc::new(AtomicU64::new(0));
            let router = Router::new()
                .route("/plaintext", get(plaintext))
                .route("/json", get(json))
                .route("/rooms/{id}", get(room))
                .route("/echo", post(echo))
                .layer(DefaultBodyLimit::max(1 << 20));
            let router = router.route(
                "/count",
                get({
                    let served = served.clone();
                    move || {
                        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                        std::future::ready(format!("{n}\n"))
                    }
                }),
            );
            hyper_rt::serve(listener, TowerService(router)).await;
        }
    });
    startup.exit("axum_hello", result);
}

async fn plaintext() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain")], "Hello, World!")
}

async fn json() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "message": "Hello, World!" }))
}

async fn room(
    Path(id): Path<u32>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let player = query.get("player").map_or("nobody", String::as_str);
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    format!("room {id}: {player} ({agent})\n")
}

async fn echo(body: Bytes) -> impl IntoResponse {
    if body.is_empty() {
        return (StatusCode::BAD_REQUEST, Bytes::from_static(b"empty body\n"));
    }
    (StatusCode::OK, body)
}
