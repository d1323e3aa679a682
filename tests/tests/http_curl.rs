//! The HTTP/1.1 server as curl meets it (Unix: the curl here is a Linux program, which a Windows
//! build under Wine cannot start): keep-alive reuse across URLs, uploads with
//! `Expect: 100-continue`, chunked uploads, HEAD, and a pipelined-looking burst of transfers.

#![cfg(unix)]

use std::process::Command;

use coring_protocols::http1::Response;
use coring_protocols::serve::{BodyStream, Config, Router};
use coring_tests::{TestServer, serve};

fn start() -> TestServer {
    serve(Config::default(), || {
        Router::new()
            .route("GET", "/plaintext", |_req, _p| async {
                Response::new(200)
                    .header("Content-Type", "text/plain")
                    .body("Hello, World!")
            })
            .route("HEAD", "/plaintext", |_req, _p| async {
                Response::new(200)
                    .header("Content-Type", "text/plain")
                    .body("Hello, World!")
            })
            .route("POST", "/echo", |req, _p| async move {
                // Large and chunked bodies stream; small ones arrive whole.
                let Some(body) = BodyStream::of(&req) else {
                    return Response::new(200).body(req.body().clone());
                };
                let mut all = Vec::new();
                loop {
                    match body.next().await {
                        Ok(Some(piece)) => all.extend_from_slice(&piece),
                        Ok(None) => return Response::new(200).body(all),
                        Err(e) => return Response::new(400).body(e.to_string()),
                    }
                }
            })
    })
}

/// Runs curl with `args` (bounded to 20 s) and returns its stdout and stderr.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--http1.1"])
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl {args:?}: {stderr}");
    (stdout, stderr)
}

#[coring::test]
fn curl_reuses_one_connection_for_many_requests() {
    let server = start();
    let url = format!("http://{}/plaintext", server.addr);
    let urls: Vec<&str> = std::iter::repeat_n(url.as_str(), 5).collect();
    let mut args = vec!["--verbose"];
    args.extend(&urls);
    let (body, verbose) = curl(&args);
    assert_eq!(body, "Hello, World!".repeat(5));
    assert_eq!(
        verbose.matches("Connected to").count() + verbose.matches("Established connection").count(),
        1,
        "one TCP connection for five requests:\n{verbose}"
    );
    assert!(
        verbose.matches("Re-using existing").count() + verbose.matches("Reusing existing").count()
            >= 4,
        "{verbose}"
    );
}

#[coring::test]
fn curl_uploads_with_100_continue_and_chunked() {
    let server = start();
    let url = format!("http://{}/echo", server.addr);
    // Asked for explicitly: curl 7.88 adds it by itself only above 1 MiB, the default body limit.
    let big: String = (0..900_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let path = std::env::temp_dir().join(coring::__test::unique("curl-upload"));
    std::fs::write(&path, &big).unwrap();
    let data = format!("@{}", path.display());
    let (echoed, verbose) = curl(&[
        "--verbose",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &data,
        &url,
    ]);
    assert!(
        echoed == big,
        "900 kB echoed intact, got {} bytes: {:?}\n{verbose}",
        echoed.len(),
        &echoed[..echoed.len().min(200)]
    );
    assert!(verbose.contains("100 Continue"), "{verbose}");
    let (echoed, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        &url,
    ]);
    assert!(echoed == big, "chunked upload echoed intact");
    std::fs::remove_file(&path).unwrap();
}

#[coring::test]
fn curl_head_gets_headers_without_a_body() {
    let server = start();
    let url = format!("http://{}/plaintext", server.addr);
    let (head, _) = curl(&["--head", &url]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 13"),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "no body after a HEAD: {head:?}");
}
