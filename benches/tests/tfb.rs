//! `coring-tfb` follows the TechEmpower rules and the binaries convention.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coring::driver::probe::DriverChoice;

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: tfb\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

#[coring::test]
fn plaintext_and_json_follow_the_rules(driver: DriverChoice) {
    let driver = if driver == DriverChoice::Uring {
        "uring"
    } else {
        "compat"
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_coring-tfb"))
        .args(["--addr", "127.0.0.1:0", "--cores", "2", "--driver", driver])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();

    let plain = get(&addr, "/plaintext");
    assert!(plain.starts_with("HTTP/1.1 200 OK\r\n"), "{plain}");
    assert_eq!(header(&plain, "content-type"), Some("text/plain"));
    assert_eq!(header(&plain, "content-length"), Some("13"));
    assert_eq!(header(&plain, "server"), Some("coring"));
    let date = header(&plain, "date").unwrap().to_string();
    assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
    assert!(plain.ends_with("\r\n\r\nHello, World!"));

    let json = get(&addr, "/json");
    assert_eq!(header(&json, "content-type"), Some("application/json"));
    let body = json.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["message"], "Hello, World!");
    assert_eq!(
        header(&json, "content-length"),
        Some(body.len().to_string().as_str())
    );

    // The Date header moves on (refreshed once per second per core).
    let start = Instant::now();
    let mut later = date.clone();
    while later == date && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        later = header(&get(&addr, "/plaintext"), "date")
            .unwrap()
            .to_string();
    }
    assert_ne!(later, date, "Date refreshed");

    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}
