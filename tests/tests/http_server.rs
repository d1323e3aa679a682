//! The HTTP/1.1 server over real loopback sockets: a third-party client (ureq), pipelining,
//! and every smuggling vector over a raw socket.

use std::time::Duration;

use coring_protocols::http1::Response;
use coring_protocols::serve::{BodyStream, Config, Router};

use coring_tests::{TestServer, exchange, serve};

fn router() -> Router {
    Router::new()
        .route("GET", "/plaintext", |_req, _p| async {
            Response::new(200)
                .header("Content-Type", "text/plain")
                .body("Hello, World!")
        })
        .route("POST", "/echo", |req, _p| async move {
            Response::new(200).body(req.body().clone())
        })
        .route("POST", "/echo-stream", |req, _p| async move {
            // Chunked bodies stream: read whole here.
            let body = match BodyStream::of(&req) {
                Some(stream) => stream.read_all(1 << 20).await.unwrap_or_default(),
                None => req.body().clone(),
            };
            Response::new(200).body(body)
        })
        .route("GET", "/echo-header", |req, _p| async move {
            // An application that decodes its query and puts it in a header.
            let v = req
                .query()
                .unwrap_or("")
                .replace("%0d%0a", "\r\n")
                .replace("%20", " ");
            Response::new(200).header("X-Echo", v).body("echoed")
        })
        .route("GET", "/users/:id", |_req, p| async move {
            Response::new(200).body(format!("user {}", p.get("id").unwrap_or("")))
        })
}

/// A ureq client that hands back every status instead of failing on 4xx and 5xx.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn start(config: Config) -> TestServer {
    serve(config, router)
}

#[coring::test]
fn a_real_client_gets_answers_bodies_and_statuses() {
    let server = start(Config::default());
    let base = format!("http://{}", server.addr);
    let agent = agent();
    for _ in 0..3 {
        let mut resp = agent.get(&format!("{base}/plaintext")).call().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/plain");
        assert_eq!(resp.headers()["server"], "coring");
        assert!(resp.headers().contains_key("date"));
        assert_eq!(resp.body_mut().read_to_string().unwrap(), "Hello, World!");
    }
    let mut resp = agent
        .post(&format!("{base}/echo"))
        .send("ping body")
        .unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "ping body");
    let mut resp = agent.get(&format!("{base}/users/42")).call().unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "user 42");
    assert_eq!(
        agent.get(&format!("{base}/nope")).call().unwrap().status(),
        404
    );
    assert_eq!(
        agent
            .delete(&format!("{base}/plaintext"))
            .call()
            .unwrap()
            .status(),
        405
    );
}

#[coring::test]
fn sixteen_pipelined_requests_get_sixteen_answers_in_order() {
    let server = start(Config::default());
    let mut raw = Vec::new();
    for i in 0..16 {
        raw.extend_from_slice(format!("GET /users/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    raw.extend_from_slice(b"GET /plaintext HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let (text, closed) = exchange(server.addr, &raw, Duration::from_secs(5));
    assert!(closed, "Connection: close honoured");
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 200 OK")
        .skip(1)
        .map(|r| r.rsplit("\r\n\r\n").next().unwrap())
        .collect();
    assert_eq!(bodies.len(), 17, "{text}");
    for (i, b) in bodies.iter().take(16).enumerate() {
        assert_eq!(*b, format!("user {i}"));
    }
    assert_eq!(bodies[16], "Hello, World!");
}

#[coring::test]
fn smuggling_vectors_get_their_status_and_a_closed_connection() {
    let server = start(Config::default());
    let cases: &[(&[u8], &str)] = &[
        (
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            "400",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "400",
        ),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 0\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX(A): 1\r\n\r\n", "400"),
        (
            b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            "501",
        ),
        (b"GET / HTTP/1.7\r\nHost: h\r\n\r\n", "505"),
        (b"GET plaintext HTTP/1.1\r\nHost: h\r\n\r\n", "400"),
        (
            b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
    ];
    for (raw, status) in cases {
        let (text, closed) = exchange(server.addr, raw, Duration::from_secs(5));
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} → {text:?}",
            String::from_utf8_lossy(raw)
        );
        assert!(text.contains("Connection: close"), "{text}");
        assert!(
            closed,
            "connection closed after {:?}",
            String::from_utf8_lossy(raw)
        );
        // And the server still serves others.
        let (ok, _) = exchange(
            server.addr,
            b"GET /plaintext HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
    }
    // A smuggled second request after a bad one is never answered.
    let (text, _) = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 30\r\n\r\nGET /users/smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(!text.contains("smuggled"), "{text}");
    // The 400 says what was wrong.
    let (text, _) = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(text.ends_with("chunked applied more than once"), "{text}");
}

#[coring::test]
fn absolute_form_targets_and_zero_padded_chunk_sizes_are_served() {
    let server = start(Config::default());
    // RFC 9112 section 3.2.2: a server must accept absolute-form (what a client sends to a
    // proxy); it is routed by its path.
    let (text, closed) = exchange(
        server.addr,
        b"GET http://h:80/plaintext HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("Hello, World!") && closed, "{text}");
    // Chunk sizes with 16 and more hex digits, all but the last zeros (nginx and hyper take
    // them).
    let (text, _) = exchange(
        server.addr,
        b"POST /echo-stream HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          0000000000000000000005\r\nhello\r\n00000000000000000000\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}

#[coring::test]
fn idle_keep_alive_connections_close_and_busy_ones_stay() {
    use std::io::{Read, Write};
    let server = start(Config {
        idle_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = b"GET /plaintext HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut buf = [0u8; 4096];
    let read = |s: &mut std::net::TcpStream, buf: &mut [u8]| loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.unwrap(),
        }
    };
    // Busy for 1.2 s, four idle-timeouts long, one request every 150 ms: never closed.
    for _ in 0..8 {
        s.write_all(request).unwrap();
        let n = read(&mut s, &mut buf);
        assert!(
            buf[..n].ends_with(b"Hello, World!"),
            "answered on the same connection"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    // Then idle: closed once the timeout has passed, not long after.
    let idle_from = std::time::Instant::now();
    assert_eq!(read(&mut s, &mut buf), 0, "closed when idle");
    let waited = idle_from.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[coring::test]
fn idle_keep_alive_connections_hold_no_receive_buffer() {
    // Memory follows bytes in flight: once answered, a keep-alive connection keeps none of the
    // core's pooled buffers while it waits for its next request.
    let server = serve(Config::default(), || {
        |_req: coring_protocols::http1::Request| async {
            let in_use = coring::runtime::core_stats().pool.in_use;
            Response::new(200).body(format!("{in_use:04}"))
        }
    });
    let ask = |conn: &mut std::net::TcpStream| -> u64 {
        use std::io::Write;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = coring_tests::read_some(conn, &mut buf).unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
            if let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                && got.len() >= head_end + 4 + 4
            {
                let body = &got[head_end + 4..head_end + 8];
                return std::str::from_utf8(body).unwrap().parse().unwrap();
            }
        }
    };
    let mut idle: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    for conn in &mut idle {
        ask(conn);
    }
    // The one request being answered holds its own buffer; the twenty idle connections none.
    let mut probe = std::net::TcpStream::connect(server.addr).unwrap();
    assert_eq!(ask(&mut probe), 1);
    // And they still serve.
    assert_eq!(ask(&mut idle[7]), 1);
}

/// Reads one response with a `Content-Length` body from `s`; returns the head and body.
fn read_response(s: &mut std::net::TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end + 4]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
                return (head, body);
            }
        }
        let n = coring_tests::read_some(s, &mut buf).expect("read");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[coring::test]
fn an_http10_keep_alive_request_is_answered_keep_alive_and_the_connection_stays() {
    use std::io::Write;
    let server = start(Config::default());
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let (head, body) = read_response(&mut s);
        // A 1.0 client closes unless told otherwise (RFC 9112 section 9.3).
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nconnection: keep-alive\r\n"),
            "{head}"
        );
        assert_eq!(body, "Hello, World!");
    }
    // Without the token a 1.0 connection closes after its answer, and says nothing else.
    s.write_all(b"GET /plaintext HTTP/1.0\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut s);
    assert!(!head.to_ascii_lowercase().contains("keep-alive"), "{head}");
    let mut rest = [0u8; 1];
    assert_eq!(
        coring_tests::read_some(&mut s, &mut rest).unwrap_or(0),
        0,
        "closed after a plain 1.0 request"
    );
}

#[coring::test]
fn a_header_carrying_client_bytes_cannot_split_the_response() {
    let server = start(Config::default());
    let base = format!("http://{}", server.addr);
    let agent = agent();
    let mut clean = agent
        .get(&format!("{base}/echo-header?hello%20there"))
        .call()
        .unwrap();
    assert_eq!(clean.status(), 200);
    assert_eq!(clean.headers()["x-echo"], "hello there");
    assert_eq!(clean.body_mut().read_to_string().unwrap(), "echoed");
    let split = agent
        .get(&format!("{base}/echo-header?a%0d%0aSet-Cookie:%20evil=1"))
        .call()
        .unwrap();
    assert_eq!(split.status(), 500);
    assert!(split.headers().get("set-cookie").is_none());
    assert!(split.headers().get("x-echo").is_none());
    // The server goes on serving.
    let again = agent.get(&format!("{base}/plaintext")).call().unwrap();
    assert_eq!(again.status(), 200);
}
