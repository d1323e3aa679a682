//! `coring-tfb --tls-cert --tls-key` as curl and `openssl s_client` meet it, both drivers, with
//! a CA and certificates made for the test: TLS 1.2 and 1.3, ALPN `http/1.1`, keep-alive,
//! session resumption reported as reused on the second connection, and the client refusing an
//! untrusted CA, a name the certificate is not for, and an expired certificate.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use coring::driver::probe::DriverChoice;

/// Files of one test, removed when dropped.
struct Files(PathBuf);

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, a certificate for `localhost` it signed, and one that expired: PEM files.
fn pki(tag: &str) -> Files {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("coring-tfb-tls-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "coring test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, expired) in [("leaf", false), ("expired", true)] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
    Files(dir)
}

/// `coring-tfb` over TLS with `cert`; its port.
struct Tfb {
    child: Child,
    port: u16,
}

impl Drop for Tfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(driver: DriverChoice, cert: &Path, key: &Path) -> Tfb {
    let driver = if driver == DriverChoice::Uring {
        "uring"
    } else {
        "compat"
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_coring-tfb"))
        .args(["--addr", "127.0.0.1:0", "--cores", "1", "--driver", driver])
        .arg("--tls-cert")
        .arg(cert)
        .env("CORING_TLS_KEY", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!("{line:?}");
        });
    let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    Tfb { child, port }
}

/// curl with a deadline, `localhost` pinned to 127.0.0.1; its output.
fn curl(port: u16, args: &[&str], urls: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "curl", "-sS", "-v", "--resolve"])
        .arg(format!("localhost:{port}:127.0.0.1"))
        .args(["--resolve", &format!("other.test:{port}:127.0.0.1")])
        .args(args);
    for url in urls {
        cmd.arg(url.replace("PORT", &port.to_string()));
    }
    cmd.output().expect("curl (apt install curl)")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[coring::test]
fn curl_over_tls_1_2_and_1_3_with_alpn_and_keep_alive(driver: DriverChoice) {
    let files = pki("curl");
    let tfb = start(
        driver,
        &files.0.join("leaf.pem"),
        &files.0.join("leaf-key.pem"),
    );
    let ca = files.0.join("ca.pem");
    let ca = ca.to_str().unwrap();
    for (versions, name) in [
        (["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
        (["--tlsv1.3", "--tls-max", "1.3"], "TLSv1.3"),
    ] {
        let mut args = vec!["--cacert", ca];
        args.extend(versions);
        let out = curl(
            tfb.port,
            &args,
            &[
                "https://localhost:PORT/plaintext",
                "https://localhost:PORT/json",
            ],
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(
            stdout, "Hello, World!{\"message\":\"Hello, World!\"}",
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("SSL connection using {name}")),
            "{stderr}"
        );
        assert!(
            stderr.contains("ALPN: server accepted http/1.1"),
            "{stderr}"
        );
        // Both transfers on one connection.
        assert!(stderr.contains("Re-using existing connection"), "{stderr}");
    }
}

#[coring::test]
fn curl_refuses_an_untrusted_ca_a_wrong_name_and_an_expired_certificate(driver: DriverChoice) {
    let files = pki("refusals");
    let tfb = start(
        driver,
        &files.0.join("leaf.pem"),
        &files.0.join("leaf-key.pem"),
    );
    let ca = files.0.join("ca.pem");
    let ca = ca.to_str().unwrap();
    // The system's roots do not know our CA: curl's "peer certificate cannot be authenticated".
    let untrusted = curl(tfb.port, &[], &["https://localhost:PORT/plaintext"]);
    assert_eq!(
        untrusted.status.code(),
        Some(60),
        "{}",
        text(&untrusted.stderr)
    );
    let wrong_name = curl(
        tfb.port,
        &["--cacert", ca],
        &["https://other.test:PORT/plaintext"],
    );
    assert_eq!(
        wrong_name.status.code(),
        Some(60),
        "{}",
        text(&wrong_name.stderr)
    );
    // The server keeps serving after the refusals.
    let fine = curl(
        tfb.port,
        &["--cacert", ca],
        &["https://localhost:PORT/plaintext"],
    );
    assert_eq!(
        text(&fine.stdout),
        "Hello, World!",
        "{}",
        text(&fine.stderr)
    );

    let expired = start(
        driver,
        &files.0.join("expired.pem"),
        &files.0.join("expired-key.pem"),
    );
    let out = curl(
        expired.port,
        &["--cacert", ca],
        &["https://localhost:PORT/plaintext"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(60), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
}

/// `openssl s_client` sending one request, saving or reusing its session.
fn s_client(port: u16, ca: &Path, version: &str, session: (&str, &Path)) -> String {
    let mut child = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-alpn",
            "http/1.1",
        ])
        .arg("-CAfile")
        .arg(ca)
        .args([version, "-ign_eof", session.0])
        .arg(session.1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (apt install openssl)");
    // `Connection: close`: the server's close ends s_client after the answer (and the TLS 1.3
    // tickets that came before it).
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
}

#[coring::test]
fn openssl_resumes_its_session_on_the_second_connection(driver: DriverChoice) {
    let files = pki("resume");
    let tfb = start(
        driver,
        &files.0.join("leaf.pem"),
        &files.0.join("leaf-key.pem"),
    );
    let ca = files.0.join("ca.pem");
    for version in ["-tls1_3", "-tls1_2"] {
        let session = files.0.join(format!("session{version}"));
        let first = s_client(tfb.port, &ca, version, ("-sess_out", &session));
        assert!(first.contains("Hello, World!"), "{version}: {first}");
        assert!(first.contains("New,"), "{version}: {first}");
        assert!(
            first.contains("ALPN protocol: http/1.1"),
            "{version}: {first}"
        );
        std::thread::sleep(Duration::from_millis(50));
        let second = s_client(tfb.port, &ca, version, ("-sess_in", &session));
        assert!(second.contains("Hello, World!"), "{version}: {second}");
        assert!(second.contains("Reused,"), "{version}: {second}");
    }
}

/// `openssl s_client` in its interactive mode (command letters on a line of their own), fed
/// `lines` a moment apart; what it printed, both streams.
fn s_client_interactive(port: u16, ca: &Path, version: &str, lines: &[&str]) -> String {
    let mut child = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca)
        .arg(version)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client (apt install openssl)");
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        // A broken pipe: s_client is gone (the refusal under test).
        if stdin.write_all(line.as_bytes()).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[coring::test]
fn key_updates_are_answered_and_renegotiation_is_refused(driver: DriverChoice) {
    let files = pki("rekey");
    let tfb = start(
        driver,
        &files.0.join("leaf.pem"),
        &files.0.join("leaf-key.pem"),
    );
    let ca = files.0.join("ca.pem");
    let get = "GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // TLS 1.3: `K` asks for the server's key update in return, `k` does not; requests keep
    // being answered under the new keys.
    let out = s_client_interactive(tfb.port, &ca, "-tls1_3", &["K\n", get, "k\n", get]);
    assert_eq!(out.matches("KEYUPDATE").count(), 2, "{out}");
    assert_eq!(out.matches("Hello, World!").count(), 2, "{out}");
    // TLS 1.2: a renegotiation is refused with the no_renegotiation alert.
    let out = s_client_interactive(tfb.port, &ca, "-tls1_2", &["R\n", get]);
    assert!(out.contains("RENEGOTIATING"), "{out}");
    assert!(out.contains("no renegotiation"), "{out}");
    // The server goes on serving.
    let fine = curl(
        tfb.port,
        &["--cacert", ca.to_str().unwrap()],
        &["https://localhost:PORT/plaintext"],
    );
    assert_eq!(
        text(&fine.stdout),
        "Hello, World!",
        "{}",
        text(&fine.stderr)
    );
}
