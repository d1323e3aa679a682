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
