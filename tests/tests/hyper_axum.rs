//! hyper and axum on coring cores, both drivers: the `axum_hello` example (an axum `Router` on
//! two cores) against curl (routes, a path parameter and a query, a chunked upload echoed back,
//! the body limit, keep-alive) and a hundred pipelined requests on one socket; a hyper service
//! holding `Rc` state (no `Send`) whose header read timeout runs on the core's timer and closes
//! a connection that never finishes its head; and hyper over our TLS stream against curl.
#![cfg(target_os = "linux")]

use std::cell::Cell;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::driver::probe::DriverChoice;
use coring::net::TcpListener;
use coring_protocols::hyper_rt::{self, HyperIo};
use coring_tests::example::Example;
use hyper::body::Incoming;
use hyper::{Request, Response};

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[coring::test]
fn the_axum_example_against_curl_and_a_pipelining_client(driver: DriverChoice) {
    let driver = match driver {
        DriverChoice::Uring => "uring",
        DriverChoice::Compat => "compat",
        DriverChoice::Auto => "auto",
    };
    let server = Example::start("axum_hello", ["--cores", "2", "--driver", driver]);
    let base = format!("http://{}", server.addr());

    let (body, _) = curl(&[&format!("{base}/plaintext")]);
    assert_eq!(body, "Hello, World!");
    let (body, _) = curl(&[&format!("{base}/json")]);
    assert_eq!(body, r#"{"message":"Hello, World!"}"#);
    let (body, _) = curl(&["-A", "coring-test", &format!("{base}/rooms/42?player=ada")]);
    assert_eq!(body, "room 42: ada (coring-test)\n");
    let (code, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/rooms/x"),
    ]);
    assert_eq!(code, "400", "a path parameter that is not a number");
    let (code, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/nowhere"),
    ]);
    assert_eq!(code, "404");

    // A chunked upload of 512 KiB comes back whole; one over the 1 MiB limit is refused.
    let dir = std::env::temp_dir().join(coring::__test::unique("axum"));
    std::fs::create_dir_all(&dir).unwrap();
    let upload: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("up"), &upload).unwrap();
    std::fs::write(dir.join("big"), vec![1u8; 2 << 20]).unwrap();
    let back = dir.join("back");
    curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", dir.join("up").display()),
        "-o",
        back.to_str().unwrap(),
        &format!("{base}/echo"),
    ]);
    assert!(
        std::fs::read(&back).unwrap() == upload,
        "the echoed upload differs"
    );
    let (code, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        &format!("@{}", dir.join("big").display()),
        &format!("{base}/echo"),
    ]);
    assert_eq!(code, "413");
    let _ = std::fs::remove_dir_all(&dir);

    // Five requests on one curl: one connection, kept alive.
    let urls: Vec<String> = (0..5).map(|_| format!("{base}/plaintext")).collect();
    let mut args: Vec<&str> = vec!["-w", "%{num_connects} "];
    args.extend(urls.iter().map(String::as_str));
    let (out, _) = curl(&args);
    assert_eq!(out.matches("Hello, World!").count(), 5);
    let connects: Vec<&str> = out
        .split("Hello, World!")
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        connects.iter().map(|s| s.trim()).collect::<Vec<_>>(),
        ["1", "0", "0", "0", "0"],
        "{out}"
    );

    // A hundred requests in one write: a hundred answers, in order.
    let mut sock = std::net::TcpStream::connect(server.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut burst = String::new();
    for i in 0..100 {
        burst.push_str(&format!(
            "GET /rooms/{i} HTTP/1.1\r\nHost: x\r\nUser-Agent: p\r\n\r\n"
        ));
    }
    sock.write_all(burst.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let until = Instant::now() + Duration::from_secs(10);
    while String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200")
        .count()
        < 100
    {
        assert!(Instant::now() < until, "{}", String::from_utf8_lossy(&got));
        let n = coring_tests::read_some(&mut sock, &mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let rooms: Vec<u32> = text
        .match_indices("room ")
        .map(|(at, _)| {
            let rest = &text[at + 5..];
            rest[..rest.find(':').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(rooms, (0..100).collect::<Vec<_>>());
}

#[coring::test]
async fn a_service_with_rc_state_and_the_header_timeout_on_the_cores_timer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr();
    let served = Rc::new(Cell::new(0u32));
    let service = {
        let served = served.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let served = served.clone();
            async move {
                served.set(served.get() + 1);
                let body = format!("{} {} #{}\n", req.method(), req.uri().path(), served.get());
                Ok::<_, Infallible>(Response::new(body))
            }
        })
    };
    coring::spawn_local(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = service.clone();
            coring::spawn_local(async move {
                let mut builder = hyper_rt::http1_builder();
                builder.header_read_timeout(Duration::from_millis(300));
                let _ = builder
                    .serve_connection(HyperIo::new(stream), service)
                    .await;
            });
        }
    });
    // The clients are blocking sockets: on a thread of their own, while this core serves.
    let clients = std::thread::spawn(move || {
        let mut ok = std::net::TcpStream::connect(addr).unwrap();
        ok.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answers = String::new();
        for _ in 0..3 {
            ok.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 1024];
            let n = coring_tests::read_some(&mut ok, &mut buf).unwrap();
            answers.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        // Half a head, then nothing: hyper closes it once its 300 ms are up.
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        slow.write_all(b"GET /slow HTTP/1.1\r\nHost:").unwrap();
        let t = Instant::now();
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        (answers, t.elapsed(), rest)
    });
    while !clients.is_finished() {
        coring::time::sleep(Duration::from_millis(10)).await;
    }
    let (answers, waited, rest) = clients.join().unwrap();
    for n in 1..=3 {
        assert!(answers.contains(&format!("GET /a #{n}\n")), "{answers}");
    }
    assert_eq!(served.get(), 3);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    // hyper answers a head that timed out with 408 or closes silently, by version.
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest}"
    );
}

#[coring::test]
fn hyper_over_tls_against_curl() {
    use coring_protocols::tls::{self, TlsAcceptor};

    let dir = std::env::temp_dir().join(coring::__test::unique("hyper-tls"));
    let pem = coring_tests::pki::SelfSigned::write(&dir, &["localhost"]);
    let (cert_path, key_path) = (pem.cert_path, pem.key_path);
    let config = std::sync::Arc::new(tls::server_config_from_pem(&cert_path, &key_path).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let ca = cert_path.clone();
    let curl_thread = std::thread::spawn(move || {
        let port: u16 = rx.recv().unwrap();
        curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            &format!("https://localhost:{port}/over/tls"),
            &format!("https://localhost:{port}/again"),
        ])
        .0
    });
    coring::block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(listener.local_addr().port()).unwrap();
        let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
            Ok::<_, Infallible>(Response::new(format!("tls {}\n", req.uri().path())))
        });
        let (stream, _) = listener.accept().await.unwrap();
        let stream = TlsAcceptor::new(config).accept(stream).await.unwrap();
        // curl's two requests on one connection; it closes when done.
        hyper_rt::serve_connection(stream, service).await.unwrap();
    });
    assert_eq!(curl_thread.join().unwrap(), "tls /over/tls\ntls /again\n");
    let _ = std::fs::remove_dir_all(&dir);
}
