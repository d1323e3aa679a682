//! Traffic capture read back by `tshark` (the Debian package): a server that captures writes a
//! pcapng file in which Wireshark's dissectors find every HTTP request and response, the
//! client's address and port, a body over many segments reassembled whole, and one TCP
//! conversation per connection.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use coring_protocols::capture::Capture;
use coring_protocols::http1::{Request, Response};
use coring_protocols::serve::Config;
use coring_tests::serve;

/// Reads answers until `n` have come (each with a Content-Length).
fn read_answers(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let complete = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        let mut rest: &str = &text;
        let mut count = 0;
        while let Some(end) = rest.find("\r\n\r\n") {
            let len: usize = rest[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if rest.len() < end + 4 + len {
                break;
            }
            rest = &rest[end + 4 + len..];
            count += 1;
        }
        count >= n
    };
    while !complete(&got) {
        let k = coring_tests::read_some(s, &mut buf).expect("an answer");
        assert!(k > 0, "closed early");
        got.extend_from_slice(&buf[..k]);
    }
    got
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark (the Debian package; .ci/run installs it)");
    assert!(out.status.success(), "tshark {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[coring::test]
fn tshark_reads_the_capture_as_http_over_tcp() {
    let dir = std::env::temp_dir().join(coring::__test::unique("capture"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("traffic.pcapng");
    let capture = Capture::to_file(&file).unwrap();
    let server = serve(
        Config {
            capture: Some(capture.clone()),
            ..Config::default()
        },
        || {
            |req: Request| async move {
                match req.path() {
                    "/hello" => Response::new(200).body("hello"),
                    _ => Response::new(200).body(req.body().clone()),
                }
            }
        },
    );
    let server_addr = server.addr;
    // Two requests on one connection, then a 60 KB body on another (read whole before the handler runs).
    let mut first = TcpStream::connect(server.addr).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let first_port = first.local_addr().unwrap().port();
    first
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_answers(&mut first, 2);
    let body = vec![b'b'; 60_000];
    let mut second = TcpStream::connect(server.addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        second,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    second.write_all(&body).unwrap();
    let echoed = read_answers(&mut second, 1);
    assert!(echoed.ends_with(&body));
    drop((first, second));
    drop(server);
    // The file is whole once the last handle is gone and the writer has caught up.
    let lost = capture.lost_bytes();
    capture.finish();
    let path = file.to_str().unwrap();
    // Decoded as HTTP whatever the port: Wireshark gives many ephemeral ports to other
    // protocols' dissectors, and a server that happened to get one was read as that.
    let as_http = format!("tcp.port=={},http", server_addr.port());
    let until = Instant::now() + Duration::from_secs(20);
    // One line per packet with HTTP in it; several messages in one packet are joined by '|'.
    let fields = [
        "-r",
        path,
        "-d",
        &as_http,
        "-Y",
        "http",
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-E",
        "aggregator=|",
        "-e",
        "tcp.srcport",
        "-e",
        "http.request.method",
        "-e",
        "http.request.uri",
        "-e",
        "http.response.code",
        "-e",
        "http.content_length",
    ];
    let (requests, answers) = loop {
        let text = tshark(&fields);
        let mut requests = Vec::new();
        let mut answers = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(',').collect();
            let list = |i: usize| -> Vec<String> {
                f.get(i)
                    .filter(|v| !v.is_empty())
                    .map(|v| v.split('|').map(str::to_owned).collect())
                    .unwrap_or_default()
            };
            let port: u16 = f[0].parse().unwrap();
            for (method, uri) in list(1).into_iter().zip(list(2)) {
                requests.push((port, method, uri));
            }
            answers.extend(list(3));
            if let Some(len) = list(4).last().filter(|_| !list(1).is_empty()) {
                requests.push((port, "length".into(), len.clone()));
            }
        }
        if answers.len() >= 3 || Instant::now() > until {
            break (requests, answers);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let hello = (first_port, "GET".to_owned(), "/hello".to_owned());
    if requests.is_empty() {
        // Say what the file holds, for a failure that is not the dissector's.
        let all = tshark(&["-r", path, "-d", &as_http]);
        panic!("no HTTP in the capture ({lost} bytes lost); tshark reads:\n{all}");
    }
    assert_eq!(
        requests.iter().filter(|r| **r == hello).count(),
        2,
        "two GETs from the client's port: {requests:?}"
    );
    assert!(
        requests.iter().any(|(_, m, u)| m == "POST" && u == "/echo"),
        "the POST: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|(_, m, len)| m == "length" && len == "60000"),
        "its body reassembled whole: {requests:?}"
    );
    assert_eq!(answers, ["200", "200", "200"], "three answers");
    let conversations = tshark(&["-r", path, "-q", "-z", "conv,tcp"]);
    let flows = conversations
        .lines()
        .filter(|l| l.contains(&format!(":{}", server_port(&conversations))))
        .count();
    assert_eq!(flows, 2, "{conversations}");
    // No lost bytes, no malformed packets.
    let expert = tshark(&["-r", path, "-d", &as_http, "-q", "-z", "expert,error"]);
    assert!(!expert.contains("Malformed"), "{expert}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server's port as the conversation table shows it (the port both rows share).
fn server_port(table: &str) -> String {
    let ports: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("<->"))
        .flat_map(|l| {
            l.split_whitespace()
                .filter(|w| w.contains(':'))
                .filter_map(|w| w.rsplit(':').next())
                .collect::<Vec<_>>()
        })
        .collect();
    ports
        .iter()
        .find(|p| ports.iter().filter(|q| q == p).count() >= 2)
        .map(|p| (*p).to_owned())
        .unwrap_or_default()
}
