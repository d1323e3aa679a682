//! The suite in a tiny mode: one variant pair, one second per run, the report written and
//! well-formed. The full suite is the main job, not a test.

use std::io::{Read, Write};
use std::process::Command;

#[test]
fn tiny_suite_measures_validates_and_reports() {
    let out = std::env::temp_dir().join(format!("coring-suite-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_suite"))
        .args(["--only", "coring-uring,coring-compat,plaintext,echo-64"])
        .args([
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--runs",
            "2",
            "--no-syscalls",
        ])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run the suite");
    assert!(status.success());

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{results:#?}");
    for r in results {
        assert!(r["skipped"].is_null(), "{r:#}");
        for field in ["rps_median", "rps_min", "rps_max", "cpu_pct", "rps_per_cpu"] {
            assert!(r[field].as_f64().unwrap() > 0.0, "{field} in {r:#}");
        }
        assert!(r["p99_us"].as_u64().unwrap() > 0);
        assert!(r.get("syscalls_per_req").is_some());
        assert_eq!(r["errors"], 0, "{r:#}");
    }
    let variants: Vec<&str> = results
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    assert!(variants.contains(&"coring-uring") && variants.contains(&"coring-compat"));
    let baseline = results
        .iter()
        .find(|r| r["variant"] == "coring-uring")
        .unwrap();
    assert_eq!(baseline["ratio_to_baseline"].as_f64(), Some(1.0));
    // Per-round ratios: the baseline's own are 1 each round; the other's spread holds its
    // median.
    assert_eq!(baseline["ratio_min"].as_f64(), Some(1.0));
    for r in results {
        let (lo, mid, hi) = (
            r["ratio_min"].as_f64().unwrap(),
            r["ratio_to_baseline"].as_f64().unwrap(),
            r["ratio_max"].as_f64().unwrap(),
        );
        assert!(lo <= mid * 1.0001 && mid <= hi * 1.0001, "{r:#}");
        assert!(r["figure_min"].as_f64().unwrap() <= r["figure_max"].as_f64().unwrap());
    }
    assert!(report["kernel"].is_string() && report["cpu"].is_string());

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## plaintext") && md.contains("## echo-64") && md.contains("## Targets"));
    let svg = std::fs::read_to_string(out.join("throughput.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    // One page with the tables and the charts.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"));
    assert!(html.contains("<h2>plaintext") && html.contains("<h2>Targets</h2>"));
    assert!(html.contains("<td>coring-compat</td>") && html.contains("<svg"));
    assert_eq!(
        html.matches("<table>").count(),
        html.matches("</table>").count()
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn websocket_workloads_run_coring_beside_its_websocket_peers() {
    let out = std::env::temp_dir().join(format!("coring-suite-ws-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_suite"))
        .args([
            "--only",
            "coring-uring,tokio-tungstenite,fastwebsockets,monoio-uring,ws-echo-20",
        ])
        .args(["--duration", "500ms", "--warmup", "100ms", "--runs", "1"])
        .arg("--no-syscalls")
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run the suite");
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    let row = |v: &str| {
        results
            .iter()
            .find(|r| r["variant"] == v)
            .unwrap_or_else(|| panic!("{v}: {results:#?}"))
    };
    for v in ["coring-uring", "tokio-tungstenite", "fastwebsockets"] {
        let r = row(v);
        assert!(r["skipped"].is_null(), "{r:#}");
        assert!(r["rps_per_cpu"].as_f64().unwrap() > 0.0, "{r:#}");
        assert_eq!(r["errors"], 0, "{r:#}");
    }
    // A variant with no WebSocket server is reported as such, not measured.
    assert!(row("monoio-uring")["skipped"].is_string());
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_websocket_server_that_echoes_wrongly_is_refused() {
    // Answers the handshake, then sends back something else than each message.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(m) = ws.read() {
                    if m.is_binary() || m.is_text() {
                        let _ = ws.send(tungstenite::Message::binary(vec![0u8; 3]));
                    }
                }
            });
        }
    });
    let err = coring_benches::suite::validate::ws(addr).unwrap_err();
    assert!(err.contains("echo_mismatch"), "{err}");
}

#[test]
fn unknown_names_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_suite"))
        .args(["--only", "apache"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_server_that_answers_wrongly_is_refused() {
    // Right status and body, but a header the others do not send.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nServer: tfb\r\nDate: {date}\r\nContent-Type: text/plain\r\n\
                 X-Extra: 1\r\nContent-Length: 13\r\n\r\nHello, World!"
            );
        }
    });
    let err = coring_benches::suite::validate::tfb(addr, None).unwrap_err();
    assert!(err.contains("headers"), "{err}");
}

#[test]
fn nginx_joins_as_the_reference_for_files_and_plaintext() {
    // Installed by CI (.ci/run); the suite itself skips nginx with the reason when it is not.
    assert!(
        coring_benches::servers::nginx::binary().is_some(),
        "nginx is not installed (apt-get install nginx)"
    );
    // A relative output directory, as the README's command uses (nginx resolves relative
    // paths against its own prefix: the config must not pass them on).
    let out = std::path::PathBuf::from(format!("target/coring-suite-nginx-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_suite"))
        .args(["--only", "nginx,coring-uring,plaintext,json,static"])
        .args(["--duration", "500ms", "--warmup", "100ms", "--runs", "1"])
        .arg("--no-syscalls")
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run the suite");
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let row = |workload: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["variant"] == "nginx" && r["workload"] == workload)
            .cloned()
            .unwrap()
    };
    // Served and validated (right status, type and bytes), measured with its worker's CPU.
    for workload in ["plaintext", "static"] {
        let r = row(workload);
        assert!(r["skipped"].is_null(), "{r:#}");
        assert!(r["rps_median"].as_f64().unwrap() > 0.0, "{r:#}");
        assert!(
            r["cpu_pct"].as_f64().unwrap() > 1.0,
            "worker CPU counted: {r:#}"
        );
        assert_eq!(r["errors"], 0, "{r:#}");
    }
    let json = row("json");
    assert!(
        json["skipped"].as_str().unwrap().contains("JSON"),
        "{json:#}"
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn axum_on_coring_runs_beside_tokio_hyper() {
    let out = std::env::temp_dir().join(format!("coring-suite-axum-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_suite"))
        .args([
            "--only",
            "axum-on-coring,tokio-hyper,plaintext,json,static,echo-64",
        ])
        .args(["--duration", "500ms", "--warmup", "100ms", "--runs", "1"])
        .arg("--no-syscalls")
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run the suite");
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let row = |variant: &str, workload: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["variant"] == variant && r["workload"] == workload)
            .cloned()
            .unwrap_or_else(|| panic!("no {variant} {workload} row"))
    };
    // Served, validated (status, headers, bytes) and measured beside the same hyper on tokio.
    for workload in ["plaintext", "json", "static"] {
        for variant in ["axum-on-coring", "tokio-hyper"] {
            let r = row(variant, workload);
            assert!(r["skipped"].is_null(), "{r:#}");
            assert!(r["rps_median"].as_f64().unwrap() > 0.0, "{r:#}");
            assert_eq!(r["errors"], 0, "{r:#}");
        }
    }
    let echo = row("axum-on-coring", "echo-64");
    assert!(echo["skipped"].is_string(), "{echo:#}");
    let _ = std::fs::remove_dir_all(out);
}
