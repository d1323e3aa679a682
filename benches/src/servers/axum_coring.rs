//! axum on coring: an axum `Router` served by hyper's HTTP/1 server on coring cores through
//! `coring_protocols::hyper_rt` (the io_uring driver), one core per listener. The tfb app with
//! the headers every variant sends; beside `tokio-hyper` it shows what the runtime under the
//! same hyper is worth. `/static` reads the file with `std::fs` on the core (axum's handlers
//! must be `Send`, so not with the engine's own file reads): a blocking read of a page-cached
//! file, as nginx's is.

use axum::Router;
use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE, SERVER};
use axum::http::{HeaderValue, Response, StatusCode};
use axum::routing::get;
use coring::driver::probe::DriverChoice;
use coring_protocols::hyper_rt::{self, TowerService};

use super::coring_server::per_core;
use super::{SERVER_NAME, ServerConfig, json_body, with_date};

/// Serves `config`'s tfb app until the process is stopped.
pub fn serve(config: ServerConfig) -> Result<(), String> {
    let file = config.file.map(std::sync::Arc::new);
    per_core(
        config.listeners,
        DriverChoice::Uring,
        "axum-coring",
        |listener| {
            let file = file.clone();
            async move {
                let router = Router::new()
                    .route(
                        "/plaintext",
                        get(|| async { respond("text/plain", crate::PLAINTEXT.to_vec()) }),
                    )
                    .route(
                        "/json",
                        get(|| async { respond("application/json", json_body()) }),
                    )
                    .route(
                        "/static",
                        get(move || {
                            let file = file.clone();
                            async move {
                                match file.as_deref().map(std::fs::read) {
                                    Some(Ok(bytes)) => respond("application/octet-stream", bytes),
                                    _ => status(StatusCode::NOT_FOUND),
                                }
                            }
                        }),
                    );
                // Title-case names, as tokio-hyper sends them: the same bytes on the wire.
                let mut builder = hyper_rt::http1_builder();
                builder.title_case_headers(true);
                hyper_rt::serve_with(listener, builder, TowerService(router)).await;
            }
        },
    )
}

/// The head every variant sends, in its order: Server, Date, Content-Type, Content-Length.
fn respond(content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(SERVER, HeaderValue::from_static(SERVER_NAME));
    with_date(|d| {
        if let Ok(v) = HeaderValue::from_bytes(d) {
            h.insert(DATE, v);
        }
    });
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    *resp.body_mut() = Body::from(body);
    resp
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = code;
    resp
}
