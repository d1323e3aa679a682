//! The example servers follow the binaries convention: flags, one ready line, graceful exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coring::driver::probe::DriverChoice;

fn example(name: &str) -> PathBuf {
    // tests run from target/<profile>/deps; examples are built next to it by `cargo test`.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// The `--driver` value for a test case's driver.
fn driver_flag(driver: DriverChoice) -> &'static str {
    match driver {
        DriverChoice::Uring => "uring",
        DriverChoice::Compat => "compat",
        DriverChoice::Auto => "auto",
    }
}

/// A server command that [`interrupt`] can reach: on Windows the child gets a process group of
/// its own, which console control events address.
fn server(name: &str) -> Command {
    #[allow(unused_mut, reason = "only Windows adds to it")]
    let mut cmd = Command::new(example(name));
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt as _;
        cmd.creation_flags(windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP);
    }
    cmd
}

/// Asks `child` to shut down the way a user would: SIGTERM on Unix, Ctrl+Break on Windows.
fn interrupt(child: &std::process::Child) {
    #[cfg(unix)]
    {
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: plain syscall on our own child.
        let r = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent};
        // SAFETY: plain call; the child leads its own process group (see `server`).
        let ok = unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, child.id()) };
        assert_ne!(ok, 0, "Ctrl+Break: {}", std::io::Error::last_os_error());
    }
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[coring::test]
#[cfg_attr(
    windows,
    ignore = "Wine delivers no console control event to a process group \
              (GenerateConsoleCtrlEvent: ERROR_INVALID_ACCESS); .ci/wine/test sends Ctrl+C \
              to the Windows echo from outside instead"
)]
fn echo_announces_serves_and_drains_when_interrupted(driver: DriverChoice) {
    let mut child = server("echo")
        .args(["--addr", "127.0.0.1:0", "--cores", "2"])
        .args(["--driver", driver_flag(driver)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0, "the real port is announced");

    // Several connections (they land on both cores).
    for i in 0..20u8 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let msg = [i; 100];
        s.write_all(&msg).unwrap();
        let mut back = [0u8; 100];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    // An idle connection does not hold up the shutdown.
    let mut idle = std::net::TcpStream::connect(addr).unwrap();

    interrupt(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "exactly one line on stdout, then {rest:?}");
    let mut b = [0u8; 1];
    assert_eq!(idle.read(&mut b).unwrap_or(0), 0, "idle connection closed");
}

#[test]
fn echo_rejects_bad_flags_with_one_line_and_status_2() {
    for args in [
        vec!["--bogus"],
        vec!["--cores", "zero"],
        vec!["--addr", "nowhere"],
        vec!["--driver", "epoll?"],
        vec!["--cores"],
    ] {
        let out = Command::new(example("echo")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("echo: "), "{err:?}");
    }
    let out = Command::new(example("echo"))
        .env("CORING_DRIVER", "nonsense")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[coring::test]
fn echo_that_cannot_bind_says_so_and_exits_1(driver: DriverChoice) {
    // The port is held by a listener without SO_REUSEPORT, so the server's bind fails.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let out = Command::new(example("echo"))
        .args([
            "--addr",
            &addr,
            "--cores",
            "2",
            "--driver",
            driver_flag(driver),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "no ready line: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("echo: core 0: "), "{err}");
}

#[test]
fn echo_help_explains_every_flag() {
    let out = Command::new(example("echo"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--addr",
        "--cores",
        "--driver",
        "--no-pin",
        "--coalesce-us",
        "--help",
    ] {
        assert!(help.contains(flag), "{flag} undocumented");
    }
}

#[coring::test]
#[cfg_attr(
    windows,
    ignore = "Wine delivers no console control event to a process group \
              (GenerateConsoleCtrlEvent: ERROR_INVALID_ACCESS); .ci/wine/test sends Ctrl+C \
              to the Windows echo from outside instead"
)]
fn udp_echo_announces_echoes_and_drains_when_interrupted(driver: DriverChoice) {
    let mut child = server("udp_echo")
        .args(["--addr", "127.0.0.1:0", "--cores", "2"])
        .args(["--driver", driver_flag(driver)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
        .parse()
        .unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..50u8 {
        client.send_to(&[i; 32], addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, addr);
        assert_eq!(&buf[..n], &[i; 32]);
    }
    interrupt(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}
