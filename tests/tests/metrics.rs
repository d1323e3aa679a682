//! The Prometheus endpoint as a scraper meets it: curl fetches `whoami`'s `/metrics` and the
//! Prometheus project's own Python parser (`prometheus_client`, installed by `.ci/run` under
//! `target/pylib`) reads it; every core has its series, the counters count the connections
//! made, and they only grow between scrapes.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use coring_tests::Example;

/// Parses the text format with prometheus_client; `(sample name, labels as k=v,...) → value`.
fn parse(text: &str) -> HashMap<(String, String), f64> {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> → target/pylib
    let pylib: PathBuf = exe.ancestors().nth(3).expect("target dir").join("pylib");
    assert!(
        pylib.join("prometheus_client").exists(),
        "{} lacks prometheus_client (.ci/run installs it: python3 -m pip install --target target/pylib prometheus_client)",
        pylib.display()
    );
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    assert family.documentation, family.name
    for s in family.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print("%s %s %r" % (s.name, labels or "-", s.value))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", &pylib)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let name = parts.next().unwrap().to_owned();
            let labels = parts.next().unwrap().to_owned();
            let value = parts.next().unwrap().parse().unwrap();
            ((name, labels), value)
        })
        .collect()
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

fn total(samples: &HashMap<(String, String), f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn a_scraper_reads_every_cores_counters() {
    let whoami = Example::start("whoami", ["--cores", "2"]);
    let first = parse(&scrape(whoami.addr()));
    for core in ["0", "1"] {
        let key = (
            "coring_connections_accepted_total".to_owned(),
            format!("core={core}"),
        );
        assert!(first.contains_key(&key), "no series for core {core}");
    }
    assert!(first.contains_key(&(
        "coring_admission_total".to_owned(),
        "outcome=denied".to_owned()
    )));
    // Twenty connections, one request each.
    for _ in 0..20 {
        let mut s = TcpStream::connect(whoami.addr()).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let second = parse(&scrape(whoami.addr()));
    let accepted = |s: &HashMap<_, _>| total(s, "coring_connections_accepted_total");
    assert!(
        accepted(&second) - accepted(&first) >= 21.0,
        "{} then {}",
        accepted(&first),
        accepted(&second)
    );
    assert!(
        total(&second, "coring_received_bytes_total")
            > total(&first, "coring_received_bytes_total")
    );
    // Counters never go back.
    for ((name, labels), value) in &first {
        if name.ends_with("_total") {
            let now = second[&(name.clone(), labels.clone())];
            assert!(now >= *value, "{name}{{{labels}}}: {value} then {now}");
        }
    }
}
