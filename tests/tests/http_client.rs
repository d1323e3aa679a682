//! The HTTP/1.1 client over loopback, against coring's own server and raw std servers:
//! keep-alive pooling, redirects and method rewriting, cookies, limits, timeouts, a stale pooled
//! connection retried, close-delimited bodies, and the blocking API.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

use coring_protocols::client::{Client, ClientConfig, ClientError, ClientRequest, blocking};
use coring_protocols::http1::{Http1Error, Response};
use coring_protocols::serve::{Config, Router};

use coring_tests::{TestServer, serve};

fn start() -> TestServer {
    serve(Config::default(), || {
        Router::new()
            .route("GET", "/plaintext", |_r, _p| async {
                Response::new(200).body("Hello, World!")
            })
            .route("GET", "/hop/:n", |_r, p| async move {
                let n: u32 = p.get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
                if n == 0 {
                    Response::new(200).body("arrived")
                } else {
                    Response::new(302).header("Location", format!("/hop/{}", n - 1))
                }
            })
            .route("POST", "/form", |_r, _p| async {
                Response::new(303).header("Location", "/method")
            })
            .route("POST", "/keep", |_r, _p| async {
                Response::new(307).header("Location", "/method")
            })
            .route("GET", "/method", |r, _p| async move {
                Response::new(200).body(format!("{} {}", r.method(), r.body().len()))
            })
            .route("POST", "/method", |r, _p| async move {
                Response::new(200).body(format!("{} {}", r.method(), r.body().len()))
            })
            .route("GET", "/set-cookie", |_r, _p| async {
                Response::new(200)
                    .header("Set-Cookie", "session=abc123; Path=/; HttpOnly")
                    .body("ok")
            })
            .route("GET", "/show-cookie", |r, _p| async move {
                let c = r.header("cookie").map(|c| c.to_vec()).unwrap_or_default();
                Response::new(200).body(c)
            })
            .route("GET", "/big", |_r, _p| async {
                Response::new(200).body(vec![b'x'; 2 * 1024 * 1024])
            })
            .route("GET", "/slow", |_r, _p| async {
                coring::time::sleep(Duration::from_secs(5)).await;
                Response::new(200)
            })
    })
}

#[coring::test]
fn keep_alive_pool_redirects_cookies_limits_and_timeouts() {
    let server = start();
    let base = format!("http://{}", server.addr);
    let authority = server.addr.to_string();
    coring::block_on(async move {
        let client = Client::new(ClientConfig {
            cookies: true,
            max_response_bytes: 1024 * 1024,
            request_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        });
        for _ in 0..5 {
            let r = client.get(&format!("{base}/plaintext")).await.unwrap();
            assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
        }
        assert_eq!(client.idle_connections(&authority), 1);
        assert_eq!(
            coring::runtime::core_stats().net.connected,
            1,
            "one connection reused"
        );

        let r = client.get(&format!("{base}/hop/5")).await.unwrap();
        assert_eq!(r.text(), "arrived");
        assert_eq!(
            client.get(&format!("{base}/hop/20")).await,
            Err(ClientError::TooManyRedirects)
        );
        let post = ClientRequest::new("POST", &format!("{base}/form")).body("a=1");
        assert_eq!(
            client.send(post).await.unwrap().text(),
            "GET 0",
            "303 → GET"
        );
        let post = ClientRequest::new("POST", &format!("{base}/keep")).body("a=1");
        assert_eq!(
            client.send(post).await.unwrap().text(),
            "POST 3",
            "307 keeps it"
        );

        client.get(&format!("{base}/set-cookie")).await.unwrap();
        let r = client.get(&format!("{base}/show-cookie")).await.unwrap();
        assert_eq!(r.text(), "session=abc123");

        assert_eq!(
            client.get(&format!("{base}/big")).await,
            Err(ClientError::Protocol(Http1Error::BodyTooLarge))
        );
        assert_eq!(
            client.get(&format!("{base}/slow")).await,
            Err(ClientError::Timeout)
        );
        assert!(matches!(
            client.get("ftp://example.invalid/").await,
            Err(ClientError::InvalidUrl(_))
        ));
    });
}

/// A raw server: answers each connection's first request with `reply`, then closes.
fn one_shot_server(
    reply: &'static [u8],
    conns: usize,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        for _ in 0..conns {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            s.write_all(reply).unwrap();
            // Close without reading more: the client's pooled copy goes stale.
        }
    });
    (addr, t)
}

#[coring::test]
fn a_stale_pooled_connection_is_retried_for_idempotent_requests() {
    let (addr, t) = one_shot_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 2);
    coring::block_on(async move {
        let client = Client::default();
        let url = format!("http://{addr}/x");
        assert_eq!(client.get(&url).await.unwrap().text(), "ok");
        assert_eq!(client.idle_connections(&addr.to_string()), 1);
        // Let the server's close arrive; the pooled connection is now dead.
        coring::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            client.get(&url).await.unwrap().text(),
            "ok",
            "retried on a new one"
        );
    });
    t.join().unwrap();
}

#[coring::test]
fn close_delimited_bodies_and_the_blocking_api() {
    let (addr, t) = one_shot_server(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
        1,
    );
    let r = blocking::get(&format!("http://{addr}/")).unwrap();
    assert_eq!(
        (r.status, r.text().as_str(), r.keep_alive),
        (200, "until close", false)
    );
    t.join().unwrap();

    // Nothing listening: a typed connect error.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    match blocking::get(&format!("http://127.0.0.1:{port}/")) {
        Err(ClientError::Connect(e)) => assert_eq!(e.kind(), coring::ErrorKind::ConnectionRefused),
        other => panic!("{other:?}"),
    }
}
