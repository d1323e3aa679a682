//! The binaries convention's configuration, on the programs users run (`echo`, `whoami`): a
//! TOML file under `--config`, overridden by `CORING_*` variables, overridden by flags; unknown
//! keys and wrong types refused with one line and status 2; `--pid-file` keeping a second
//! instance from starting while the first runs, and letting one start after it ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use coring_tests::{Example, example_path};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coring-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `echo` with `args` and `env`, and returns the address of its ready line.
fn echo_addr(args: &[&str], env: &[(&str, &str)]) -> SocketAddr {
    let mut cmd = Command::new(example_path("echo"));
    cmd.args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("ready line: {line:?}"))
        .parse()
        .unwrap()
}

/// Runs `echo` expecting it to refuse to start: its status and the one line it said.
fn refusal(args: &[&str]) -> (i32, String) {
    let out = Command::new(example_path("echo"))
        .args(args)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    (out.status.code().unwrap_or(-1), said)
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn flags_beat_the_environment_which_beats_the_config_file() {
    let dir = scratch("layers");
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = write(
        &dir,
        "echo.toml",
        &format!("addr = \"127.0.0.1:{file_port}\"\ncores = 1\nno-pin = true\n"),
    );
    let env_addr = format!("127.0.0.1:{env_port}");
    let flag_addr = format!("127.0.0.1:{flag_port}");
    assert_eq!(echo_addr(&["--config", &config], &[]).port(), file_port);
    assert_eq!(
        echo_addr(&["--config", &config], &[("CORING_ADDR", &env_addr)]).port(),
        env_port
    );
    assert_eq!(
        echo_addr(
            &["--config", &config, "--addr", &flag_addr],
            &[("CORING_ADDR", &env_addr)]
        )
        .port(),
        flag_port
    );
    // CORING_CONFIG names the file too.
    assert_eq!(
        echo_addr(&[], &[("CORING_CONFIG", &config)]).port(),
        file_port
    );
    // A server's own flags are keys as well.
    let whoami_config = write(&dir, "whoami.toml", "proxy-protocol = \"127.0.0.1/32\"\n");
    let whoami = Example::start("whoami", ["--cores", "1", "--config", &whoami_config]);
    let mut s = std::net::TcpStream::connect(whoami.addr()).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    // Without a PROXY header the connection is closed: the file's setting took.
    let _ = std::io::Read::read_to_end(&mut s, &mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_file_is_one_line_and_status_2() {
    let dir = scratch("bad");
    for (text, expect) in [
        ("adress = \"127.0.0.1:0\"\n", "unknown key \"adress\""),
        ("cores = [1, 2]\n", "cores is an array"),
        ("no-pin = \"yes\"\n", "expected true or false"),
        ("addr = \n", "--config"),
        // The key of another server's flag is unknown to this one.
        ("proxy-protocol = \"127.0.0.1/32\"\n", "unknown key"),
    ] {
        let config = write(&dir, "bad.toml", text);
        let (status, said) = refusal(&["--config", &config]);
        assert_eq!(status, 2, "{text:?}: {said}");
        assert_eq!(said.lines().count(), 1, "{text:?}: {said}");
        assert!(
            said.starts_with("echo: ") && said.contains(expect),
            "{text:?}: {said}"
        );
    }
    let (status, said) = refusal(&["--config", &dir.join("missing.toml").display().to_string()]);
    assert_eq!(status, 2, "{said}");
    // Values from the file are checked as flags are.
    let config = write(&dir, "cores.toml", "cores = 0\n");
    let (status, said) = refusal(&["--config", &config]);
    assert_eq!(status, 2, "{said}");
    assert!(said.contains("--cores"), "{said}");
    let config = write(&dir, "coalesce.toml", "coalesce-us = \"soon\"\n");
    let (status, said) = refusal(&["--config", &config]);
    assert_eq!(status, 2, "{said}");
    assert!(said.contains("--coalesce-us"), "{said}");
    let (status, said) = refusal(&["--coalesce-us", "2000000"]);
    assert_eq!(status, 2, "{said}");
    assert!(said.contains("--coalesce-us"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--coalesce-us` (and `coalesce-us` in the file) is taken by every server of the convention:
/// the echo example serves with wake-ups coalesced.
#[test]
fn a_server_serves_with_wake_ups_coalesced() {
    let dir = scratch("coalesce");
    let config = write(&dir, "echo.toml", "coalesce-us = 200\n");
    for args in [
        vec!["--cores", "1", "--coalesce-us", "300"],
        vec!["--cores", "1", "--config", config.as_str()],
    ] {
        let echo = Example::start("echo", args);
        let mut s = std::net::TcpStream::connect(echo.addr()).unwrap();
        std::io::Write::write_all(&mut s, b"coalesced").unwrap();
        let mut got = [0u8; 9];
        std::io::Read::read_exact(&mut s, &mut got).unwrap();
        assert_eq!(&got, b"coalesced");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pid_file_keeps_a_second_instance_from_starting() {
    let dir = scratch("pid");
    let pid_file = dir.join("echo.pid").display().to_string();
    let first = Example::start("echo", ["--cores", "1", "--pid-file", &pid_file]);
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), first.id().to_string());
    let (status, said) = refusal(&["--addr", "127.0.0.1:0", "--pid-file", &pid_file]);
    assert_eq!(status, 1, "{said}");
    assert!(
        said.contains("another instance") && said.contains(&first.id().to_string()),
        "{said}"
    );
    // The first's pid is still what the file says.
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), written);
    drop(first);
    // Once it has ended, the lock is gone with it.
    let second = Example::start("echo", ["--cores", "1", "--pid-file", &pid_file]);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        second.id().to_string()
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
