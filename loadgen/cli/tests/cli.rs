//! The binary as users run it: flags, exit codes and the files it writes.

use std::process::Command;

use coring::driver::probe::DriverChoice;

use coring_tests::known::{Behaviour, http_server};

fn loadgen() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coring-loadgen"));
    c.env_remove("CORING_LOG");
    c
}

#[coring::test]
fn http_run_writes_json_hgrm_and_svg(driver: DriverChoice) {
    let addr = http_server(Behaviour::Delay(std::time::Duration::ZERO));
    let dir = std::env::temp_dir().join(format!(
        "coring-loadgen-cli-{}-{driver:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, hgrm, svg) = (dir.join("r.json"), dir.join("r.hgrm"), dir.join("r.svg"));
    let out = loadgen()
        .args([
            "http",
            &format!("http://{addr}/plaintext"),
            "-c",
            "4",
            "-d",
            "500ms",
        ])
        .args([
            "--pipeline",
            "4",
            "--no-pin",
            "--driver",
            if driver == DriverChoice::Uring {
                "uring"
            } else {
                "compat"
            },
            "--expect-body-len",
            "13",
            "-H",
            "X-Test: 1",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--plot")
        .arg(&svg)
        .output()
        .expect("run coring-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Requests/sec:"), "{stdout}");
    assert!(stdout.contains("Errors: none"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("valid JSON");
    assert_eq!(report["schema_version"], 1);
    assert!(report["rps"].as_f64().unwrap() > 0.0);
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(report["latency_us"][p].as_u64().unwrap() > 0, "{p}");
    }
    assert!(report["errors"].as_object().unwrap().is_empty());
    assert!(!report["percentiles"].as_array().unwrap().is_empty());
    assert!(!report["timeline"].as_array().unwrap().is_empty());

    let hgrm = std::fs::read_to_string(&hgrm).unwrap();
    assert!(
        hgrm.contains("Percentile") && hgrm.contains("#[Max"),
        "{hgrm}"
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_flags_exit_2_and_help_documents_the_flags() {
    let out = loadgen().args(["http"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = loadgen().args(["http", "ftp://x/"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = loadgen()
        .args(["http", "http://127.0.0.1:1/", "-d", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = loadgen().args(["http", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--connections",
        "--duration",
        "--cores",
        "--pipeline",
        "--rate",
        "--header",
        "--timeout",
        "--warmup",
        "--json",
        "--hgrm",
        "--plot",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
}

/// `https://` against an independent server: `openssl s_server -www` (one connection at a
/// time, each answered with its status page and closed), with a certificate made by `openssl
/// req` and trusted through `--cacert`; then the same server refused without it.
#[cfg(target_os = "linux")]
#[coring::test]
fn https_against_openssl_s_server(driver: DriverChoice) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!(
        "coring-loadgen-https-{}-{driver:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        // An end-entity certificate (webpki refuses a CA as the server's own).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt install openssl)");
    assert!(made.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // s_server says ACCEPT once it listens; what it prints afterwards is drained.
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ACCEPT") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "s_server ended");
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let run = |trust: bool| {
        let mut cmd = loadgen();
        // Trusted: 20 answers (a deadline far off); not: a second of refusals.
        let limit = if trust { "20s" } else { "1s" };
        cmd.args(["http", &format!("https://localhost:{port}/"), "-c", "1"])
            .args(["-n", "20", "-d", limit, "--no-pin", "--driver"])
            .arg(if driver == DriverChoice::Uring {
                "uring"
            } else {
                "compat"
            })
            .args(["--expect-status", "200"]);
        if trust {
            cmd.arg("--cacert").arg(&cert);
        }
        cmd.output().expect("run coring-loadgen")
    };
    let trusted = run(true);
    let stdout = String::from_utf8_lossy(&trusted.stdout).into_owned();
    let stranger = run(false);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(trusted.status.success(), "{stdout}");
    assert!(stdout.contains("Errors: none"), "{stdout}");
    // The public roots do not know the certificate: every connection fails its handshake.
    let refused = String::from_utf8_lossy(&stranger.stdout);
    assert!(refused.contains("tls_handshake"), "{refused}");
}
