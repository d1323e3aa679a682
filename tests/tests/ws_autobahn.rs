//! The Autobahn testsuite's fuzzing client against coring's WebSocket server, on both
//! drivers: every case must end OK, NON-STRICT or INFORMATIONAL (Unix: the testsuite is a
//! Python 2.7 program). Every case of 1.* to 10.*, and of the permessage-deflate groups (12.*,
//! 13.*) the small-message ones in every subgroup (see `cases`); the larger ones take the
//! testsuite's own compressor minutes (all 216 passed when run by hand: `wstest -m
//! fuzzingclient` against the `ws_echo` example, 12 minutes).
//!
//! The testsuite is found in `CORING_AUTOBAHN` or `target/autobahn` (`bash .ci/run` puts it
//! there: `python2.7 -m pip install --target target/autobahn autobahntestsuite`).

#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coring_protocols::serve::{Config, Router};
use coring_protocols::websocket::{self as ws, WsConfig};
use coring_tests::serve;

/// Longest the testsuite may run for one server.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// What a case may end as.
const PASSING: [&str; 3] = ["OK", "NON-STRICT", "INFORMATIONAL"];

fn autobahn_dir() -> PathBuf {
    let dir = std::env::var_os("CORING_AUTOBAHN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/autobahn"),
        PathBuf::from,
    );
    assert!(
        dir.join("autobahntestsuite").is_dir(),
        "the Autobahn testsuite is not installed in {} (python2.7 -m pip install --target {} autobahntestsuite)",
        dir.display(),
        dir.display()
    );
    dir
}

fn echo() -> Router {
    Router::new().route("GET", "/", |req, _p| async move {
        let config = WsConfig {
            deflate: Some(ws::DeflateConfig::default()),
            ..WsConfig::default()
        };
        ws::accept(&req, config, |mut socket| async move {
            while let Ok(Some(message)) = socket.recv().await {
                if socket.send(&message).await.is_err() {
                    return;
                }
            }
        })
    })
}

/// The cases run: every group but compression's whole; of compression's (12.1–12.5: messages
/// of growing size; 13.1–13.7: every offer and context-takeover combination) the cases with
/// 16 to 256-byte messages and the fragmented one (named exactly: the testsuite reads a
/// pattern with `*` as a regular expression matched from the start of a case id).
fn cases() -> Vec<String> {
    let mut cases: Vec<String> = (1..=10).map(|g| format!("{g}.*")).collect();
    for (group, subgroups) in [(12, 5), (13, 7)] {
        for sub in 1..=subgroups {
            for case in [1, 2, 3, 11] {
                cases.push(format!("{group}.{sub}.{case}"));
            }
        }
    }
    cases
}

#[coring::test]
fn the_autobahn_fuzzing_client_finds_every_case_ok() {
    let lib = autobahn_dir();
    let server = serve(Config::default(), echo);
    let work = std::env::temp_dir().join(format!(
        "coring-autobahn-{}-{}",
        std::process::id(),
        server.addr.port()
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // The testsuite's packages are a site directory (namespace packages need its .pth files).
    let launcher = work.join("wstest.py");
    std::fs::write(
        &launcher,
        "import site, sys\nsite.addsitedir(sys.argv.pop(1))\nfrom autobahntestsuite.wstest import run\nsys.argv[0] = 'wstest'\nsys.exit(run())\n",
    )
    .unwrap();
    let report = work.join("report");
    let spec = serde_json::json!({
        "outdir": report,
        "servers": [{"agent": "coring", "url": format!("ws://{}/", server.addr)}],
        "cases": cases(),
        "exclude-cases": [],
        "exclude-agent-cases": {},
    });
    let spec_path = work.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let mut run = Command::new("python2.7")
        .env(
            "PYENV_VERSION",
            std::env::var("PYENV_VERSION").unwrap_or_else(|_| "2.7.18".into()),
        )
        .arg(&launcher)
        .arg(&lib)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_path)
        .current_dir(&work)
        // To a file, not a pipe nobody drains while it runs (a full pipe would stall it).
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("wstest.log")).unwrap())
        .spawn()
        .expect("python2.7 (the Autobahn testsuite needs it)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = run.kill();
            panic!("the testsuite ran for over {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(work.join("wstest.log")).unwrap_or_default();
    assert!(status.success(), "wstest failed: {status}\n{log}");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("index.json")).unwrap()).unwrap();
    let cases = index["coring"].as_object().expect("the agent's cases");
    assert!(cases.len() >= 349, "only {} cases ran", cases.len());
    let failed: Vec<String> = cases
        .iter()
        .filter(|(_, v)| {
            let ok = |field: &str| v[field].as_str().is_some_and(|b| PASSING.contains(&b));
            !(ok("behavior") && ok("behaviorClose"))
        })
        .map(|(id, v)| format!("{id}: {} / {}", v["behavior"], v["behaviorClose"]))
        .collect();
    assert!(
        failed.is_empty(),
        "cases not passed:\n{}",
        failed.join("\n")
    );
    let _ = std::fs::remove_dir_all(&work);
}
