//! tokio + hyper: a current-thread runtime per core thread on its own SO_REUSEPORT listener,
//! hyper's HTTP/1 server with pipelined flushing (over tokio-rustls, ring, when given a
//! certificate: the TLS peer a tokio user would pick); echo on tokio's streams.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE, HeaderValue, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{App, SERVER_NAME, ServerConfig, json_body, with_date};

/// Serves `config` on tokio + hyper, one thread per listener; never returns normally.
pub fn serve(config: ServerConfig) -> Result<(), String> {
    let app = config.app;
    let file = config.file.map(Arc::new);
    let tls = match &config.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            coring_protocols::tls::server_config_from_pem(&files.cert, &files.key)
                .map_err(|e| e.to_string())?,
        ))),
        None => None,
    };
    per_listener(config.listeners, move |stream| {
        let file = file.clone();
        let tls = tls.clone();
        async move {
            match (app, tls) {
                (App::Tfb, Some(tls)) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        http(stream, file).await;
                    }
                }
                (App::Tfb, None) => http(stream, file).await,
                (App::Echo, _) => echo(stream).await,
                // Refused before serving (`servers::serve`).
                (App::Ws, _) => {}
            }
        }
    })
}

/// A current-thread tokio runtime on a thread of its own for each listener, each accepted
/// connection (`TCP_NODELAY` set) served by a task running `serve`; never returns normally.
/// The shape every tokio-based variant shares.
pub fn per_listener<F, Fut>(listeners: Vec<std::net::TcpListener>, serve: F) -> Result<(), String>
where
    F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    super::thread_per_listener(listeners, move |listener| {
        let serve = serve.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream));
            }
        })
    })
}

async fn http<S>(stream: S, file: Option<Arc<PathBuf>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let file = file.clone();
        async move { Ok::<_, Infallible>(handle(req, file).await) }
    });
    let _ = http1::Builder::new()
        .pipeline_flush(true)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(req: Request<Incoming>, file: Option<Arc<PathBuf>>) -> Response<Full<Bytes>> {
    let (content_type, body) = match (req.uri().path(), file) {
        ("/plaintext", _) => ("text/plain", Bytes::from_static(crate::PLAINTEXT)),
        ("/json", _) => ("application/json", Bytes::from(json_body())),
        ("/static", Some(path)) => match tokio::fs::read(&*path).await {
            Ok(bytes) => ("application/octet-stream", Bytes::from(bytes)),
            Err(_) => return status(StatusCode::INTERNAL_SERVER_ERROR),
        },
        _ => return status(StatusCode::NOT_FOUND),
    };
    let len = body.len();
    let mut resp = Response::new(Full::new(body));
    let h = resp.headers_mut();
    h.insert(SERVER, HeaderValue::from_static(SERVER_NAME));
    with_date(|d| {
        if let Ok(v) = HeaderValue::from_bytes(d) {
            h.insert(DATE, v);
        }
    });
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
