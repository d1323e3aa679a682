//! The workspace's example programs started as their users start them: the binary `cargo test
//! --workspace` built, `--addr 127.0.0.1:0`, and the one `listening on HOST:PORT` line the
//! binaries convention prints once every core accepts.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

/// The path of example `name` (any crate's: examples land in one directory per profile).
/// Panics, saying how to build it, when it is not there.
pub fn example_path(name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps; the examples sit in target/<profile>/examples.
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not built (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// A running example server, stopped with SIGTERM (elsewhere: killed) and waited for when
/// dropped.
#[derive(Debug)]
pub struct Example {
    child: Child,
    addr: SocketAddr,
    /// The rest of its stdout, after the ready line; kept open so the program can go on
    /// printing.
    stdout: Option<BufReader<ChildStdout>>,
}

impl Example {
    /// Starts example `name` with `--addr 127.0.0.1:0` and `args`, and waits for its ready
    /// line. Panics if the program exits or prints anything else first.
    pub fn start<I, S>(name: &str, args: I) -> Example
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(example_path(name))
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{name}'s stdout: {e}"));
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name}'s ready line: {line:?}"));
        Example {
            child,
            addr,
            stdout: Some(stdout),
        }
    }

    /// The address its ready line gave.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its stdout past the ready line, for a test that reads what it prints next. Panics if
    /// taken twice.
    pub fn take_stdout(&mut self) -> BufReader<ChildStdout> {
        self.stdout.take().expect("stdout taken once")
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            // SAFETY: kill(2) on our own child, which has not been waited for, so its pid has
            // not been reused.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
