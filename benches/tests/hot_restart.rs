//! `coring-tfb` restarts on SIGHUP without dropping a connection: the load generator drives
//! it through three restarts and sees no refused, reset or failed request, every old process
//! exits 0, and the pid file names each new process in turn.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring_loadgen::http::{Http, HttpSpec};
use coring_loadgen::report::Report;
use coring_loadgen::run::{Options, run};

/// Exit statuses of the processes this test is the parent (or, as a subreaper, the adopter)
/// of, by pid.
#[derive(Default)]
struct Reaped(HashMap<i32, i32>);

impl Reaped {
    /// Waits up to `limit` for process `pid` to end; its `waitpid` status.
    fn wait_for(&mut self, pid: i32, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.get(&pid) {
                return Some(*status);
            }
            let mut status = 0;
            // SAFETY: waitpid on any child of ours, not blocking; `status` is ours to write.
            let got = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if got > 0 {
                self.0.insert(got, status);
                continue;
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn pid_in(file: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(file).expect("read the pid file");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file holds {text:?}"))
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process this test started (directly or through its predecessor),
    // not yet reaped, so the pid is still its.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Successors are children of their predecessors; as a subreaper the test adopts each one
/// when its parent exits, and so sees every exit status.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments; it changes only how this process reaps.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

fn get(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Both scenarios in one test: each reaps with `waitpid(-1)`, which would take the other's
/// processes if they ran side by side.
#[test]
fn sighup_restarts() {
    three_sighup_restarts_under_load_lose_no_request();
    a_failed_restart_keeps_the_old_process_serving();
}

fn three_sighup_restarts_under_load_lose_no_request() {
    become_subreaper();
    let dir = std::env::temp_dir().join(format!("coring-hot-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("tfb.pid");
    #[allow(
        clippy::zombie_processes,
        reason = "reaped with waitpid(-1), like its successors"
    )]
    let mut child = Command::new(env!("CARGO_BIN_EXE_coring-tfb"))
        .args(["--addr", "127.0.0.1:0", "--cores", "2", "--no-pin"])
        .arg("--pid-file")
        .arg(&pid_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start coring-tfb");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready = line.clone();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("ready line: {line:?}"))
        .to_string();
    let first = child.id() as i32;
    assert_eq!(pid_in(&pid_file), first);

    let spec = HttpSpec {
        url: format!("http://{addr}/plaintext"),
        expect_status: Some(200),
        expect_body_bytes: Some(13),
        ..HttpSpec::default()
    };
    let options = Options {
        connections: 16,
        cores: 1,
        duration: Duration::from_secs(8),
        warmup: Duration::from_millis(500),
        pin: false,
        ..Options::default()
    };
    let load = {
        let options = options.clone();
        std::thread::spawn(move || {
            let workload = Arc::new(Http::new(spec, 1).expect("workload"));
            let outcome = run(workload, &options, |_| {}).expect("load run");
            Report::new("http", "coring-tfb", &options, &outcome)
        })
    };

    let mut reaped = Reaped::default();
    let mut old = Vec::new();
    let mut current = first;
    std::thread::sleep(Duration::from_millis(1500));
    for restart in 1..=3 {
        signal(current, libc::SIGHUP);
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line, ready,
            "restart {restart}: the new process's ready line"
        );
        let next = pid_in(&pid_file);
        assert_ne!(
            next, current,
            "restart {restart}: the pid file names the new process"
        );
        let status = reaped
            .wait_for(current, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("restart {restart}: process {current} did not exit"));
        old.push((current, status));
        current = next;
        std::thread::sleep(Duration::from_millis(1500));
    }

    let report = load.join().expect("load thread");
    eprintln!(
        "{} requests, {:.0}/s, p99 {} us, max {} us, errors {}, dropped {}",
        report.requests,
        report.rps,
        report.latency_us.p99,
        report.latency_us.max,
        report.errors_total,
        report.dropped
    );
    signal(current, libc::SIGTERM);
    let last = reaped.wait_for(current, Duration::from_secs(15));
    let _ = std::fs::remove_dir_all(&dir);

    for (pid, status) in &old {
        assert!(
            libc::WIFEXITED(*status) && libc::WEXITSTATUS(*status) == 0,
            "old process {pid} ended with wait status {status:#x}"
        );
    }
    assert!(
        last.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
        "the last process ended with {last:?}"
    );
    assert!(report.requests > 1000, "{} requests", report.requests);
    assert_eq!(
        (report.errors_total, report.dropped),
        (0, 0),
        "errors {:?}",
        report.errors
    );
    // Served every second of the run, restarts included.
    assert!(
        report.timeline.iter().all(|s| s.rps > 0),
        "{:?}",
        report.timeline
    );
}

/// A restart whose new process cannot start leaves the old one serving, with the reason on
/// stderr; SIGHUP re-reads the config file, so a fixed file then restarts (here onto more
/// cores than before: the extra core binds a socket of its own beside the handed-over ones).
fn a_failed_restart_keeps_the_old_process_serving() {
    become_subreaper();
    let dir = std::env::temp_dir().join(format!("coring-failed-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tfb.toml");
    std::fs::write(&config, "cores = 2\nno-pin = true\n").unwrap();
    #[allow(
        clippy::zombie_processes,
        reason = "reaped with waitpid(-1), like its successor"
    )]
    let mut child = Command::new(env!("CARGO_BIN_EXE_coring-tfb"))
        .args(["--addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coring-tfb");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let stderr = BufReader::new(child.stderr.take().expect("piped"));
    let (said, errors) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = said.send(line);
        }
    });
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready = line.clone();
    let addr = ready
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let pid = child.id() as i32;
    let mut reaped = Reaped::default();

    let expect_said = |what: &str| {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match errors.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!("stderr never said {what:?}"),
            }
        }
    };
    for (file, reason) in [
        ("cores = 1\nno-pin = true\n", "give it --cores 2 or more"),
        (
            "cores = 2\nno-pin = true\nbogus = 1\n",
            "unknown key \"bogus\"",
        ),
    ] {
        std::fs::write(&config, file).unwrap();
        signal(pid, libc::SIGHUP);
        expect_said(reason);
        expect_said("restart failed");
        assert!(
            reaped.wait_for(pid, Duration::from_millis(300)).is_none(),
            "the old process kept running"
        );
        let answer = get(&addr);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }

    std::fs::write(&config, "cores = 3\nno-pin = true\n").unwrap();
    signal(pid, libc::SIGHUP);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, ready, "the new process's ready line");
    let status = reaped
        .wait_for(pid, Duration::from_secs(15))
        .expect("the old process exits");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    for _ in 0..20 {
        let answer = get(&addr);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }
    // The new process is this test's now (its parent is gone); stop it through its port's
    // owner: the only child left.
    let successor = successor_of(pid);
    signal(successor, libc::SIGTERM);
    let status = reaped.wait_for(successor, Duration::from_secs(15));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0));
}

/// The process whose parent was `pid` and is now this test (it was adopted when `pid`
/// exited): found in /proc by its parent.
fn successor_of(pid: i32) -> i32 {
    let me = std::process::id() as i32;
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if child == pid {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if parent == Some(me) && stat.contains("(coring-tfb)") {
                return child;
            }
        }
        assert!(Instant::now() < until, "no adopted coring-tfb");
        std::thread::sleep(Duration::from_millis(20));
    }
}
