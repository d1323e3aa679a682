//! A real DNS server for the tests: dnsmasq on loopback, serving only the records a test gives
//! it (Linux; Debian's `dnsmasq-base`, installed by `.ci/run`).

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// dnsmasq on 127.0.0.1 and ::1 (one port, UDP and TCP) with no upstream and no hosts file of
/// the system's, serving `records` (its own options: `--host-record=...`, `--cname=...`,
/// `--local=/test/`...) and a hosts file of the test's, logging every query; killed when
/// dropped.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Dnsmasq {
    /// Starts it with `records` and `hosts` (hosts(5) text it reads as an extra hosts file)
    /// and waits until it listens.
    pub fn start(records: &[&str], hosts: &str) -> Dnsmasq {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("coring-dnsmasq-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        let port = free_port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--bind-interfaces",
                "--listen-address=127.0.0.1,::1",
                "--pid-file=",
                "--user=root",
                "--log-queries",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
            .arg(format!("--log-facility={}", dir.join("log").display()))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian's dnsmasq-base; .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Dnsmasq { child, port, dir }
    }

    /// Its port (on both addresses).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its IPv4 address.
    pub fn v4(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its IPv6 address.
    pub fn v6(&self) -> SocketAddr {
        SocketAddr::new("::1".parse().unwrap(), self.port)
    }

    /// Replaces the extra hosts file and has dnsmasq read it again (SIGHUP), waiting until the
    /// log says it has.
    pub fn set_hosts(&self, hosts: &str) {
        let reads = self.log_lines("read ");
        std::fs::write(self.dir.join("hosts"), hosts).unwrap();
        // SAFETY: kill(2) on the pid of our own child, which has not been waited for.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill(SIGHUP): {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.log_lines("read ") <= reads {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not read its hosts again"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many queries of `kind` ("A", "AAAA") for `name` it has logged.
    pub fn queries(&self, kind: &str, name: &str) -> usize {
        // dnsmasq writes its log as it goes; give a line just sent a moment to land.
        std::thread::sleep(Duration::from_millis(50));
        self.log_lines(&format!("query[{kind}] {name} from"))
    }

    fn log_lines(&self, containing: &str) -> usize {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(containing))
            .count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free for UDP and TCP on 127.0.0.1 and ::1 a moment ago.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok()
            && std::net::TcpListener::bind(("::1", port)).is_ok();
        if free {
            return port;
        }
    }
}
