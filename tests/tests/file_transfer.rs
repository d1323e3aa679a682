//! The `file_transfer` example pair as a user runs it: the server on two cores and the client
//! downloading a file whole, resuming after a proxy cut its connection twice, and resuming a
//! partial file left by an earlier run; refusals of names with paths and offsets past the end.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coring_tests::{Example, example_path};

/// The server on two cores, serving `root`.
fn file_server(root: &Path) -> Example {
    let root = root.as_os_str();
    Example::start(
        "file_transfer",
        [
            OsStr::new("--cores"),
            OsStr::new("2"),
            OsStr::new("--root"),
            root,
        ],
    )
}

/// A directory of its own under the system's temporary one.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coring-ft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `len` bytes that differ from position to position.
fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// Runs the client; its exit status and stdout.
fn get(addr: SocketAddr, name: &str, out: &Path) -> (i32, String) {
    let output = Command::new(example_path("file_transfer"))
        .args(["get", &addr.to_string(), name])
        .arg(out)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// A TCP proxy to `upstream` that cuts each of the first `cuts` connections after `after`
/// bytes from the server.
fn cutting_proxy(upstream: SocketAddr, cuts: usize, after: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let limit = if n < cuts { after } else { usize::MAX };
            std::thread::spawn(move || {
                let Ok(mut server) = TcpStream::connect(upstream) else {
                    return;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                });
                let mut buf = vec![0u8; 64 << 10];
                let mut sent = 0;
                while sent < limit {
                    let n = match server.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n.min(limit - sent),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn a_file_arrives_whole_through_drops_and_from_a_partial_copy() {
    let root = scratch("root");
    let data = content(6 << 20);
    std::fs::write(root.join("world.bin"), &data).unwrap();
    let server = file_server(&root);
    let out = scratch("out");

    // Whole, straight.
    let (status, said) = get(server.addr(), "world.bin", &out.join("a"));
    assert_eq!(status, 0, "{said}");
    assert!(std::fs::read(out.join("a")).unwrap() == data, "bytes equal");

    // Cut twice mid-stream: the client resumes from what it has.
    let proxy = cutting_proxy(server.addr(), 2, 1_500_000);
    let (status, said) = get(proxy, "world.bin", &out.join("b"));
    assert_eq!(status, 0, "{said}");
    assert_eq!(said.matches("resumed at").count(), 2, "{said}");
    assert!(
        std::fs::read(out.join("b")).unwrap() == data,
        "bytes equal after resuming"
    );

    // A partial copy from an earlier run is completed, not restarted.
    std::fs::write(out.join("c"), &data[..1_000_000]).unwrap();
    let (status, said) = get(server.addr(), "world.bin", &out.join("c"));
    assert_eq!(status, 0, "{said}");
    assert!(said.contains("resumed at 1000000"), "{said}");
    assert!(std::fs::read(out.join("c")).unwrap() == data);

    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_requests_are_refused_and_the_server_carries_on() {
    let root = scratch("refuse");
    std::fs::write(root.join("small"), b"hello").unwrap();
    std::fs::write(root.join(".hidden"), b"secret").unwrap();
    let server = file_server(&root);
    let ask = |line: &[u8]| {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(line).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    assert_eq!(ask(b"GET small 0\n"), "OK 5\nhello");
    assert_eq!(ask(b"GET small 3\n"), "OK 5\nlo");
    assert_eq!(ask(b"GET small 5\n"), "OK 5\n");
    assert!(ask(b"GET small 6\n").starts_with("ERR offset 6 is past the end"));
    assert!(ask(b"GET ../etc/passwd 0\n").starts_with("ERR names are plain"));
    assert!(ask(b"GET .hidden 0\n").starts_with("ERR names are plain"));
    assert!(ask(b"GET nothing 0\n").starts_with("ERR no such file"));
    assert!(ask(b"PUT small 0\n").starts_with("ERR not GET"));
    assert!(ask(b"GET small -1\n").starts_with("ERR not GET"));
    assert!(ask(&[b'x'; 4000]).starts_with("ERR request line too long"));
    let out = scratch("refuse-out");
    let (status, said) = get(server.addr(), "nothing", &out.join("x"));
    assert_eq!(status, 1);
    assert!(said.contains("no such file"), "{said}");
    assert_eq!(ask(b"GET small 0\n"), "OK 5\nhello", "still serving");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&out);
}
