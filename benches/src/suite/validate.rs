//! Before a variant is measured, its answers are checked against the TechEmpower rules and
//! against each other: a variant that answers wrongly is not reported.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The body every `/static` response must carry.
pub type StaticBody<'a> = Option<&'a [u8]>;

/// Checks `/plaintext`, `/json` (and `/static` when given), pipelined on one connection.
pub fn tfb(addr: SocketAddr, static_body: StaticBody<'_>) -> Result<(), String> {
    let mut paths = vec!["/plaintext", "/json", "/plaintext"];
    if static_body.is_some() {
        paths.push("/static");
    }
    pipelined(addr, &paths, |path, head, body| {
        let (content_type, expected): (&str, Vec<u8>) = match path {
            "/plaintext" => ("text/plain", crate::PLAINTEXT.to_vec()),
            "/json" => ("application/json", super::super::servers::json_body()),
            _ => (
                "application/octet-stream",
                static_body.unwrap_or_default().to_vec(),
            ),
        };
        check(path, head, body, content_type, &expected)
    })
}

/// Checks nginx: `/plaintext` and `/static`, pipelined on one connection, by status, type and
/// body (nginx writes its own `Server` and `Connection` fields, which the others do not).
pub fn nginx(addr: SocketAddr, static_body: &[u8]) -> Result<(), String> {
    let paths = ["/plaintext", "/static", "/plaintext"];
    pipelined(addr, &paths, |path, head, body| {
        let text = String::from_utf8_lossy(head).to_ascii_lowercase();
        let (content_type, expected) = match path {
            "/plaintext" => ("text/plain", crate::PLAINTEXT),
            _ => ("application/octet-stream", static_body),
        };
        if !text.starts_with("http/1.1 200 ok\r\n")
            || !text.contains(&format!("\r\ncontent-type: {content_type}"))
        {
            return Err(format!("{path}: head {:?}", String::from_utf8_lossy(head)));
        }
        if body != expected {
            return Err(format!("{path}: wrong body ({} bytes)", body.len()));
        }
        Ok(())
    })
}

/// Checks `/plaintext` over TLS 1.3 with our client (trusting `ca`): status, body, and two
/// requests on one connection.
#[cfg(target_os = "linux")]
pub fn https(addr: SocketAddr, ca: &std::path::Path) -> Result<(), String> {
    use coring_protocols::client::{Client, ClientConfig};
    let roots = coring_protocols::tls::roots_from_pem(ca).map_err(|e| e.to_string())?;
    let config = coring_protocols::tls::client_config(roots).map_err(|e| e.to_string())?;
    let base = format!("https://localhost:{}", addr.port());
    coring::block_on(async move {
        let client = Client::new(ClientConfig {
            tls: Some(std::sync::Arc::new(config)),
            ..ClientConfig::default()
        });
        for _ in 0..2 {
            let resp = client
                .get(&format!("{base}/plaintext"))
                .await
                .map_err(|e| e.to_string())?;
            if resp.status != 200 || resp.body[..] != crate::PLAINTEXT[..] {
                return Err(format!(
                    "/plaintext over tls: {} {:?}",
                    resp.status, resp.body
                ));
            }
        }
        match client.idle_connections(&base) {
            1 => Ok(()),
            n => Err(format!("{n} connections kept for two keep-alive requests")),
        }
    })
}

#[cfg(not(target_os = "linux"))]
pub fn https(_: SocketAddr, _: &std::path::Path) -> Result<(), String> {
    Err("TLS workloads run on Linux only".into())
}

/// Sends a GET for each of `paths` in one write on one connection and hands each response's
/// head and body, in order, to `each`.
fn pipelined(
    addr: SocketAddr,
    paths: &[&str],
    mut each: impl FnMut(&str, &[u8], &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut request = Vec::new();
    for p in paths {
        request.extend_from_slice(format!("GET {p} HTTP/1.1\r\nHost: suite\r\n\r\n").as_bytes());
    }
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&request)
        .map_err(|e| format!("write: {e}"))?;
    let mut input = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    for &path in paths {
        let (head, body) = loop {
            if let Some(parsed) = split_response(&input)? {
                break parsed;
            }
            if Instant::now() > deadline {
                return Err(format!("{path}: no complete response in 5 s"));
            }
            match stream.read(&mut chunk) {
                Ok(0) => return Err(format!("{path}: connection closed")),
                Ok(n) => input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("{path}: read: {e}")),
            }
        };
        each(path, &input[..head], &input[head..head + body])?;
        input.drain(..head + body);
    }
    Ok(())
}

/// `(head length, body length)` of the first complete response in `input`.
fn split_response(input: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(input) {
        Ok(httparse::Status::Complete(head)) => {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .ok_or("response without a valid Content-Length")?;
            Ok((input.len() >= head + len).then_some((head, len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("malformed response: {e}")),
    }
}

/// The exact head every variant must send, with the Date value checked separately.
fn check(
    path: &str,
    head: &[u8],
    body: &[u8],
    content_type: &str,
    expected: &[u8],
) -> Result<(), String> {
    let head = std::str::from_utf8(head).map_err(|_| format!("{path}: head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status != "HTTP/1.1 200 OK" {
        return Err(format!("{path}: status line {status:?}"));
    }
    let fields: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let date = fields
        .iter()
        .find_map(|l| l.strip_prefix("Date: "))
        .ok_or(format!("{path}: no Date header"))?;
    httpdate::parse_http_date(date).map_err(|_| format!("{path}: bad Date {date:?}"))?;
    let want = [
        "Server: tfb".to_owned(),
        format!("Date: {date}"),
        format!("Content-Type: {content_type}"),
        format!("Content-Length: {}", expected.len()),
    ];
    if fields != want {
        return Err(format!("{path}: headers {fields:?}, expected {want:?}"));
    }
    if body != expected {
        return Err(format!("{path}: wrong body ({} bytes)", body.len()));
    }
    Ok(())
}

/// Checks that an echo server sends back what it is sent.
pub fn echo(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let message: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    stream
        .write_all(&message)
        .map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; message.len()];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("read: {e}"))?;
    if back != message {
        return Err("echoed bytes differ".into());
    }
    Ok(())
}

/// Checks a WebSocket echo server: the handshake, then text and binary messages of 0 B,
/// 20 B and 16 KiB (two in flight on each of two connections), each echoed whole and byte for
/// byte.
pub fn ws(addr: SocketAddr) -> Result<(), String> {
    use coring_loadgen::run::{Options, run};
    use coring_loadgen::ws::WsEcho;
    for (size, text) in [(0, false), (20, false), (20, true), (16 << 10, false)] {
        let options = Options {
            connections: 2,
            cores: 1,
            pipeline: 2,
            requests: Some(200),
            duration: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            pin: false,
            ..Options::default()
        };
        let echo = WsEcho::new(&format!("ws://{addr}/"), size, text, options.pipeline)?;
        let outcome =
            run(std::sync::Arc::new(echo), &options, |_| {}).map_err(|e| e.to_string())?;
        let kind = if text { "text" } else { "binary" };
        if !outcome.rec.errors.is_empty() {
            return Err(format!("{kind} of {size} bytes: {:?}", outcome.rec.errors));
        }
        if outcome.rec.requests < 200 {
            return Err(format!(
                "{kind} of {size} bytes: {} of 200 echoes",
                outcome.rec.requests
            ));
        }
    }
    Ok(())
}
