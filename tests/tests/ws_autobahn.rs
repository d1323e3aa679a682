//! The Autobahn testsuite against coring's WebSocket, on both drivers: its fuzzing client
//! against our server, and its fuzzing server against our client. Every case must end OK,
//! NON-STRICT or INFORMATIONAL (Unix: the testsuite is a Python 2.7 program). Every case of 1.* to 10.*, and of the permessage-deflate groups (12.*,
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

/// A scratch directory for one run, and the testsuite's launcher in it.
struct Run {
    work: PathBuf,
    launcher: PathBuf,
}

impl Run {
    fn new(tag: &str, port: u16) -> Run {
        let work = std::env::temp_dir().join(format!(
            "coring-autobahn-{tag}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        // The testsuite's packages are a site directory (namespace packages need its .pth
        // files).
        let launcher = work.join("wstest.py");
        std::fs::write(
            &launcher,
            "import site, sys\nsite.addsitedir(sys.argv.pop(1))\nfrom autobahntestsuite.wstest import run\nsys.argv[0] = 'wstest'\nsys.exit(run())\n",
        )
        .unwrap();
        Run { work, launcher }
    }

    /// Starts `wstest -m MODE -s SPEC ARGS` with `spec` written out.
    fn start(&self, mode: &str, spec: serde_json::Value, args: &[&str]) -> std::process::Child {
        let spec_path = self.work.join("spec.json");
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        Command::new("python2.7")
            .env(
                "PYENV_VERSION",
                std::env::var("PYENV_VERSION").unwrap_or_else(|_| "2.7.18".into()),
            )
            .arg(&self.launcher)
            .arg(autobahn_dir())
            .args(["-m", mode, "-s"])
            .arg(&spec_path)
            .args(args)
            .current_dir(&self.work)
            // To a file, not a pipe nobody drains while it runs (a full pipe would stall it).
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.work.join("wstest.log")).unwrap())
            .spawn()
            .expect("python2.7 (the Autobahn testsuite needs it)")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("wstest.log")).unwrap_or_default()
    }

    /// Checks the report for `agent`: at least `at_least` cases, each passed.
    fn check_report(&self, agent: &str, at_least: usize) {
        let index = self.work.join("report").join("index.json");
        let text = std::fs::read_to_string(&index)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", index.display(), self.log()));
        let index: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = index[agent].as_object().expect("the agent's cases");
        assert!(cases.len() >= at_least, "only {} cases ran", cases.len());
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
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

/// Waits for `child` to end, killing it past `RUN_LIMIT`.
fn wait_bounded(child: &mut std::process::Child, started: Instant) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("the testsuite ran for over {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[coring::test]
fn the_autobahn_fuzzing_client_finds_every_case_ok() {
    let server = serve(Config::default(), echo);
    let run = Run::new("client", server.addr.port());
    let spec = serde_json::json!({
        "outdir": run.work.join("report"),
        "servers": [{"agent": "coring", "url": format!("ws://{}/", server.addr)}],
        "cases": cases(),
        "exclude-cases": [],
        "exclude-agent-cases": {},
    });
    let mut wstest = run.start("fuzzingclient", spec, &[]);
    let status = wait_bounded(&mut wstest, Instant::now());
    assert!(status.success(), "wstest failed: {status}\n{}", run.log());
    run.check_report("coring", 349);
}

/// Our client echoes what the fuzzing server sends, case by case, then asks for the report.
async fn client_cases(base: String) -> Result<(), String> {
    let options = ws::ConnectOptions {
        config: WsConfig {
            deflate: Some(ws::DeflateConfig::default()),
            ..WsConfig::default()
        },
        ..ws::ConnectOptions::default()
    };
    // The server may still be starting.
    let started = Instant::now();
    let mut counter = loop {
        match ws::connect_with(&format!("{base}/getCaseCount"), &options).await {
            Ok(socket) => break socket,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                coring::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("the fuzzing server never answered: {e}")),
        }
    };
    let count: usize = match counter.recv().await {
        Ok(Some(m)) => m
            .as_text()
            .and_then(|t| t.parse().ok())
            .ok_or("a case count")?,
        other => return Err(format!("no case count: {other:?}")),
    };
    while let Ok(Some(_)) = counter.recv().await {}
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent=coring");
        let mut socket = ws::connect_with(&url, &options)
            .await
            .map_err(|e| format!("case {case}: {e}"))?;
        while let Ok(Some(message)) = socket.recv().await {
            if socket.send(&message).await.is_err() {
                break;
            }
        }
    }
    let mut done = ws::connect_with(&format!("{base}/updateReports?agent=coring"), &options)
        .await
        .map_err(|e| format!("updateReports: {e}"))?;
    while let Ok(Some(_)) = done.recv().await {}
    Ok(())
}

#[coring::test]
fn the_autobahn_fuzzing_server_finds_every_case_of_our_client_ok() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let run = Run::new("server", port);
    let spec = serde_json::json!({
        "url": format!("ws://127.0.0.1:{port}"),
        "outdir": run.work.join("report"),
        "cases": cases(),
        "exclude-cases": [],
        "exclude-agent-cases": {},
    });
    let started = Instant::now();
    let mut wstest = run.start("fuzzingserver", spec, &["--webport", "0"]);
    let base = format!("ws://127.0.0.1:{port}");
    let ran = coring::block_on(async move {
        coring::time::timeout(RUN_LIMIT, client_cases(base))
            .await
            .unwrap_or_else(|_| Err(format!("the cases took over {RUN_LIMIT:?}")))
    });
    // The server runs until stopped; the report is written by then.
    let _ = wstest.kill();
    let _ = wstest.wait();
    assert!(
        started.elapsed() < RUN_LIMIT,
        "the cases took over {RUN_LIMIT:?}"
    );
    if let Err(e) = ran {
        panic!("{e}\n{}", run.log());
    }
    run.check_report("coring", 349);
}
