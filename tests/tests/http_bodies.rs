//! File responses (zero-copy, ranges, conditional) and streamed chunked responses, read by a
//! real client and by raw sockets.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use coring::time::Sleep;
use coring_protocols::http1::Response;
use coring_protocols::serve::{BodyStream, Config, Reply, Router, serve_file};

use coring_tests::{TestServer, serve};

/// Yields `left` chunks, one every 20 ms.
struct Ticker {
    left: u32,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl futures_core::Stream for Ticker {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(coring::time::sleep(Duration::from_millis(20))));
        match sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.sleep = None;
                self.left -= 1;
                Poll::Ready(Some(Bytes::from(format!("tick {}\n", self.left))))
            }
        }
    }
}

use std::future::Future;

fn byte(i: u64) -> u8 {
    (i * 7 + i / 13) as u8
}

fn start(file: PathBuf) -> TestServer {
    serve(Config::default(), move || {
        Router::new()
            .route("GET", "/file", move |req, _p| {
                let file = file.clone();
                async move { serve_file(&req, &file) }
            })
            .route("GET", "/missing", |req, _p| async move {
                serve_file(&req, "/nonexistent/coring")
            })
            .route("POST", "/count", |req, _p| async move {
                // Reads the body piece by piece as it arrives.
                let Some(body) = BodyStream::of(&req) else {
                    return Response::new(200).body(format!("whole {}", req.body().len()));
                };
                let (mut pieces, mut bytes, mut sum) = (0u64, 0u64, 0u64);
                while let Some(piece) = body.next().await.unwrap() {
                    pieces += 1;
                    bytes += piece.len() as u64;
                    sum += piece.iter().map(|&b| u64::from(b)).sum::<u64>();
                }
                Response::new(200).body(format!("streamed {bytes} {sum} {}", pieces > 1))
            })
            .route("GET", "/stream", |_req, _p| async {
                Reply::stream(
                    Response::new(200).header("Content-Type", "text/plain"),
                    Ticker {
                        left: 5,
                        sleep: None,
                    },
                )
            })
    })
}

fn raw(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

fn split(resp: &[u8]) -> (String, &[u8]) {
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (
        String::from_utf8_lossy(&resp[..end]).into_owned(),
        &resp[end..],
    )
}

#[coring::test]
fn files_ranges_conditionals_and_streams() {
    const LEN: u64 = 1_500_000;
    let path = std::env::temp_dir().join(coring::__test::unique("serve.bin"));
    std::fs::write(&path, (0..LEN).map(byte).collect::<Vec<u8>>()).unwrap();
    let server = start(path.clone());
    let addr = server.addr;
    let base = format!("http://{addr}");

    // Whole file through a real client.
    let mut resp = ureq::get(&format!("{base}/file")).call().unwrap();
    assert_eq!(resp.headers()["content-length"], LEN.to_string().as_str());
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    let last_modified = resp.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    let body = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap();
    assert!(
        body == (0..LEN).map(byte).collect::<Vec<u8>>(),
        "file bytes differ"
    );

    // A single range.
    let got = raw(
        addr,
        "GET /file HTTP/1.1\r\nHost: h\r\nRange: bytes=1000-1999\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = split(&got);
    assert!(head.starts_with("HTTP/1.1 206 "), "{head}");
    assert!(
        head.contains(&format!("Content-Range: bytes 1000-1999/{LEN}")),
        "{head}"
    );
    assert_eq!(body, (1000..2000).map(byte).collect::<Vec<u8>>());

    // Unsatisfiable range, conditional GET, HEAD, missing file.
    let got = raw(
        addr,
        &format!(
            "GET /file HTTP/1.1\r\nHost: h\r\nRange: bytes={LEN}-\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(split(&got).0.starts_with("HTTP/1.1 416 "));
    let got = raw(
        addr,
        &format!(
            "GET /file HTTP/1.1\r\nHost: h\r\nIf-Modified-Since: {last_modified}\r\nConnection: close\r\n\r\n"
        ),
    );
    let (head, body) = split(&got);
    assert!(head.starts_with("HTTP/1.1 304 "), "{head}");
    assert!(body.is_empty());
    let got = raw(
        addr,
        "HEAD /file HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = split(&got);
    assert!(head.contains(&format!("Content-Length: {LEN}")), "{head}");
    assert!(body.is_empty(), "HEAD has no body");
    let got = raw(
        addr,
        "GET /missing HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert!(split(&got).0.starts_with("HTTP/1.1 404 "));

    // A streamed, chunked body, decoded by a real client.
    let mut resp = ureq::get(&format!("{base}/stream")).call().unwrap();
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let text = resp.body_mut().read_to_string().unwrap();
    assert_eq!(text, "tick 4\ntick 3\ntick 2\ntick 1\ntick 0\n");

    drop(server);
    std::fs::remove_file(path).unwrap();
}

#[coring::test]
fn request_bodies_stream_to_the_handler_and_small_ones_arrive_whole() {
    let server = start(PathBuf::from("/nonexistent"));
    let addr = server.addr;
    // 1 MiB, chunked, written in pieces with pauses: the handler sees it arrive in pieces.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    // The server asks for the body only when the handler reads it.
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let piece = vec![3u8; 64 * 1024];
    for _ in 0..16 {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .unwrap();
        s.write_all(&piece).unwrap();
        s.write_all(b"\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    s.write_all(b"0\r\n\r\nPOST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    let total = 16 * 64 * 1024u64;
    assert!(
        text.contains(&format!("streamed {total} {} true", total * 3)),
        "{text}"
    );
    // The next request on the same connection, small: read whole up front.
    assert!(text.contains("whole 5"), "{text}");
    drop(server);
}
