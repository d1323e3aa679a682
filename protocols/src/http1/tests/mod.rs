//! Codec tests, on the connection the server runs: pipelining, framing, limits, deadlines and
//! every smuggling vector the module doc names. Most go through [`pair::Pair`], a client and
//! a `ServerConn` under a virtual clock.

mod deadlines;
mod pair;

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;
use pair::{DATE, Pair};

/// The one request in `input`, as the connection hands it out (its body read whole).
fn decode_one(input: &[u8]) -> Result<Request, Http1Error> {
    let mut conn = ServerConn::new(Rc::new(ServerConfig::default()), Instant::now());
    conn.handle_input(input, Instant::now());
    let mut req = match conn.poll_request() {
        Some(r) => r?,
        None => panic!("incomplete: {:?}", String::from_utf8_lossy(input)),
    };
    if conn.body_streams() {
        let mut body = Vec::new();
        while let Status::Complete(Some(piece)) = conn.poll_body()? {
            body.extend_from_slice(&piece);
        }
        req.set_body(body.into());
    }
    Ok(req)
}

/// The status of the last answer to `input` (0: none yet, the connection waits for more).
fn status_of(input: &[u8]) -> u16 {
    let mut pair = Pair::ok(ServerConfig::default());
    pair.send(input);
    pair.drive_for(Duration::from_secs(1));
    pair.statuses().last().copied().unwrap_or(0)
}

#[test]
fn parses_the_techempower_request() {
    let r = decode_one(
        b"GET /plaintext HTTP/1.1\r\nHost: server\r\nUser-Agent: x\r\nAccept: text/plain\r\nConnection: keep-alive\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.method(), "GET");
    assert_eq!(r.path(), "/plaintext");
    assert_eq!(r.version(), Version::Http11);
    assert_eq!(r.header("host"), Some(&b"server"[..]));
    assert_eq!(r.headers().count(), 4);
    assert!(r.keep_alive());
    assert!(r.body().is_empty());
    assert!(!r.is_head());
    assert_eq!(r.query(), None);
}

#[test]
fn path_query_and_head_are_split_from_the_target() {
    let r = decode_one(b"HEAD /a/b?x=1&y=?2 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert!(r.is_head());
    assert_eq!(r.target(), "/a/b?x=1&y=?2");
    assert_eq!(r.path(), "/a/b");
    assert_eq!(r.query(), Some("x=1&y=?2"));
    let r = decode_one(b"GET /? HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!((r.path(), r.query()), ("/", Some("")));
}

#[test]
fn absolute_form_targets_are_routed_by_their_path_and_name_their_host() {
    let r =
        decode_one(b"GET http://example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
    assert_eq!(r.target(), "http://example.com:8080/a/b?q=1");
    assert_eq!((r.path(), r.query()), ("/a/b", Some("q=1")));
    // The target's authority overrides the Host field (RFC 9112 section 3.2.2).
    assert_eq!(r.host(), Some(&b"example.com:8080"[..]));
    let r = decode_one(b"GET HTTPS://h?x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!((r.path(), r.query()), ("/", Some("x")));
    let r = decode_one(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(r.host(), Some(&b"h"[..]));
    let r = decode_one(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(r.path(), "*");
    for bad in [
        &b"GET plaintext HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://u@h/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET 1ttp://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://h#f HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        let e = decode_one(bad).unwrap_err();
        assert_eq!(
            e,
            Http1Error::BadRequest("invalid request target"),
            "{bad:?}"
        );
    }
}

#[test]
fn pipelined_requests_come_out_in_order_whatever_the_reads() {
    let mut wire = Vec::new();
    for i in 0..16 {
        wire.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    wire.extend_from_slice(b"POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    wire.extend_from_slice(
        b"PUT /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    wire.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut want: Vec<(String, Vec<u8>)> = (0..16).map(|i| (format!("/{i}"), Vec::new())).collect();
    want.push(("/body".into(), b"hello".to_vec()));
    want.push(("/chunked".into(), b"abc".to_vec()));
    want.push(("/after".into(), Vec::new()));
    // Every split point, through the shared (in-place) path and the copying one.
    for shared in [true, false] {
        for split in 0..=wire.len() {
            let mut pair = Pair::ok(ServerConfig::default());
            pair.shared = shared;
            pair.send_split(&wire, &[split]);
            pair.drive_for(Duration::from_secs(1));
            let got: Vec<(String, Vec<u8>)> = pair
                .seen
                .iter()
                .map(|s| (s.target.clone(), s.body.clone()))
                .collect();
            assert_eq!(got, want, "split at {split}, shared {shared}");
            assert_eq!(pair.statuses(), vec![200; 19], "split at {split}");
        }
    }
    // And one byte per read.
    let mut pair = Pair::ok(ServerConfig::default());
    pair.mtu = 1;
    pair.send(&wire);
    pair.drive_for(Duration::from_secs(1));
    assert_eq!(pair.seen.len(), 19);
}

#[test]
fn chunked_bodies_are_decoded() {
    let r = decode_one(
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(&r.body()[..], b"abcde");
}

#[test]
fn keep_alive_rules_of_both_versions() {
    assert!(!decode_one(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive());
    assert!(
        decode_one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .keep_alive()
    );
    assert!(
        !decode_one(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .unwrap()
            .keep_alive()
    );
    assert!(
        decode_one(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .keep_alive()
    );
}

#[test]
fn expect_continue_is_announced_once_before_the_body() {
    for body_up_front in [true, false] {
        let config = ServerConfig {
            // Whole-body mode (read before the request is handed out) and streaming mode.
            buffer_body_up_to: if body_up_front { 1024 } else { 0 },
            ..ServerConfig::default()
        };
        let mut pair = Pair::ok(config);
        pair.send(
            b"PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        );
        pair.drive_for(Duration::from_secs(1));
        let text = String::from_utf8_lossy(&pair.written).into_owned();
        assert_eq!(text, "HTTP/1.1 100 Continue\r\n\r\n", "{body_up_front}");
        pair.drive_for(Duration::from_secs(1));
        assert_eq!(pair.written.len(), 25, "announced once");
        pair.send(b"abc");
        pair.drive_for(Duration::from_secs(1));
        assert_eq!(pair.seen[0].body, b"abc");
        assert_eq!(pair.statuses(), vec![200]);
    }
    // Answered before the body was asked for: no 100 Continue, and the body is dropped.
    let now = Instant::now();
    let config = ServerConfig {
        buffer_body_up_to: 0,
        ..ServerConfig::default()
    };
    let mut conn = ServerConn::new(Rc::new(config), now);
    conn.handle_input(
        b"PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        now,
    );
    let _req = conn.poll_request().unwrap().unwrap();
    let mut out = Vec::new();
    conn.respond(&Response::new(413), now, DATE, &mut out);
    conn.poll_transmit(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    conn.handle_input(b"abcGET / HTTP/1.1\r\nHost: h\r\n\r\n", now);
    assert_eq!(conn.poll_request().unwrap().unwrap().path(), "/");
}

#[test]
fn smuggling_vectors_are_refused_with_400() {
    let vectors: &[&[u8]] = &[
        // Content-Length and Transfer-Encoding together.
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // Duplicate and conflicting Content-Length.
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +4\r\n\r\nabcd",
        // Invalid chunk sizes.
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
        // obs-fold.
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n",
        // Bare CR.
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
        // Whitespace before the colon.
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 0\r\n\r\n",
        // Non-token header name.
        b"GET / HTTP/1.1\r\nHost: h\r\nX(A): 1\r\n\r\n",
        // chunked not last.
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        // HTTP/1.1 without Host, and with two.
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for v in vectors {
        assert_eq!(status_of(v), 400, "{:?}", String::from_utf8_lossy(v));
    }
}

#[test]
fn unknown_codings_versions_and_limits_get_their_statuses() {
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"),
        501
    );
    assert_eq!(status_of(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    assert_eq!(status_of(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
    assert_eq!(status_of(long_target.as_bytes()), 414);
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(status_of(big_header.as_bytes()), 431);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status_of(many.as_bytes()), 431);
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n"),
        413
    );
}

#[test]
fn an_oversized_head_fails_before_it_ends() {
    // 9 KiB of a header with no end yet: refused without waiting for more.
    let partial = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "a".repeat(9000));
    assert_eq!(status_of(partial.as_bytes()), 431);
}

#[test]
fn responses_are_encoded_with_length_date_and_server() {
    let resp = Response::new(200)
        .header("Content-Type", "text/plain")
        .body("Hello, World!");
    let mut out = Vec::new();
    let cx = EncodeContext {
        date: b"Sun, 22 Nov 2026 00:00:00 GMT",
        server: Some(b"coring"),
        head_request: false,
        keep_alive: true,
        http10: false,
    };
    encode_response(&resp, &cx, &mut out);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nServer: coring\r\nDate: Sun, 22 Nov 2026 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
    );
    out.clear();
    encode_response(
        &resp,
        &EncodeContext {
            head_request: true,
            keep_alive: false,
            http10: false,
            server: None,
            ..cx
        },
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.ends_with("Connection: close\r\nContent-Length: 13\r\n\r\n"),
        "{text}"
    );
}

#[test]
fn a_header_made_from_client_bytes_cannot_split_the_response() {
    // The handler echoes the target into a header: a target smuggling CR LF (percent-decoded
    // by the application, say) must not become a second field or a second response.
    let mut pair = Pair::new(ServerConfig::default(), |seen| {
        let echoed = seen.target.replace("%0d%0a", "\r\n");
        Response::new(200).header("X-Echo", echoed).body("ok")
    });
    pair.send(b"GET /a%0d%0aSet-Cookie:%20evil=1 HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    pair.drive();
    let (responses, error) = pair.responses();
    assert_eq!(error, None);
    assert_eq!(
        pair.statuses(),
        vec![500],
        "refused, and the connection closes"
    );
    assert!(!responses[0].keep_alive);
    let wire = String::from_utf8_lossy(&pair.written);
    assert!(
        !wire.contains("Set-Cookie") && !wire.contains("X-Echo"),
        "{wire}"
    );
    assert!(pair.server.is_closed());
    // Names made at run time must be tokens; fixed ones and clean values pass.
    assert!(
        Response::new(200)
            .header(String::from("Bad Name"), "v")
            .has_refused_header()
    );
    assert!(
        Response::new(200)
            .header(String::from(""), "v")
            .has_refused_header()
    );
    assert!(
        Response::new(200)
            .header("X-Nul", vec![b'a', 0])
            .has_refused_header()
    );
    let fine = Response::new(200)
        .header(String::from("X-Id"), String::from("abc def"))
        .header("Content-Type", "text/plain");
    assert!(!fine.has_refused_header());
    assert_eq!(fine.headers().count(), 2);
}
