//! RPC over real sockets, both drivers: our client against our server over TCP (postcard), a
//! Unix stream and TLS (JSON), with many calls in flight answered out of order, deadlines on
//! both ends, cancellation that reaches the handler, typed faults (the handler's error, a
//! panic, an unreadable request, too many calls, an answer too large) and a connection that
//! ends under its calls; then a Python client and a Python server speaking the JSON wire, which
//! the module documents for other languages.
#![cfg(target_os = "linux")]

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use coring::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use coring_protocols::framed::FrameIo;
use coring_protocols::rpc::{self, Client, Config, Fault, RpcError, ServeStats};
use coring_protocols::serialize::{Json, Postcard};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Req {
    Echo(String),
    Sleep { ms: u64, tag: u32 },
    Fail(String),
    Panic,
    Big(usize),
}

/// The same requests as the server's and one it does not know, in the same places: postcard
/// writes an enum as its variant's index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum NewerReq {
    Echo(String),
    Sleep { ms: u64, tag: u32 },
    Fail(String),
    Panic,
    Big(usize),
    Teleport(u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Resp {
    Echo(String),
    Slept(u32),
    Big(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AppError {
    NoSuchRoom(String),
}

/// Counts handlers dropped before they finished: the server stopped them.
#[derive(Default)]
struct Stopped(Cell<u32>);

struct Running<'a>(&'a Stopped, bool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.0.set(self.0.0.get() + 1);
        }
    }
}

fn handler(
    stopped: Rc<Stopped>,
) -> impl Fn(Req) -> std::pin::Pin<Box<dyn Future<Output = Result<Resp, AppError>>>> {
    move |req| {
        let stopped = stopped.clone();
        Box::pin(async move {
            match req {
                Req::Echo(s) => Ok(Resp::Echo(s)),
                Req::Sleep { ms, tag } => {
                    let mut running = Running(&stopped, false);
                    coring::time::sleep(Duration::from_millis(ms)).await;
                    running.1 = true;
                    Ok(Resp::Slept(tag))
                }
                Req::Fail(room) => Err(AppError::NoSuchRoom(room)),
                Req::Panic => panic!("the handler panics on purpose"),
                Req::Big(n) => Ok(Resp::Big(vec![7; n])),
            }
        })
    }
}

/// Serves each connection `listener` accepts, keeping each connection's outcome.
fn serve_tcp<F: rpc::RpcFormat + 'static>(
    listener: TcpListener,
    format: F,
    config: Config,
    stopped: Rc<Stopped>,
    outcomes: Rc<RefCell<Vec<Result<ServeStats, String>>>>,
) {
    coring::spawn_local(async move {
        while let Ok((stream, _)) = listener.accept().await {
            spawn_serve(
                stream,
                format,
                config.clone(),
                stopped.clone(),
                outcomes.clone(),
            );
        }
    });
}

fn spawn_serve<S: FrameIo + 'static, F: rpc::RpcFormat + 'static>(
    stream: S,
    format: F,
    config: Config,
    stopped: Rc<Stopped>,
    outcomes: Rc<RefCell<Vec<Result<ServeStats, String>>>>,
) {
    coring::spawn_local(async move {
        let outcome = rpc::serve(stream, format, config, handler(stopped)).await;
        outcomes
            .borrow_mut()
            .push(outcome.map_err(|e| e.to_string()));
    });
}

/// Waits (on the core's clock) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < give_up, "waited too long for {what}");
        coring::time::sleep(Duration::from_millis(5)).await;
    }
}

#[coring::test]
fn calls_in_flight_deadlines_cancels_and_typed_faults_over_tcp() {
    coring::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        let stopped = Rc::new(Stopped::default());
        let outcomes = Rc::new(RefCell::new(Vec::new()));
        let config = Config {
            max_frame: 64 * 1024,
            max_in_flight: 64,
            call_timeout: Some(Duration::from_millis(800)),
        };
        serve_tcp(
            listener,
            Postcard,
            config,
            stopped.clone(),
            outcomes.clone(),
        );
        let client: Client<Req, Resp, AppError, Postcard> = Client::new(
            TcpStream::connect(addr).await.unwrap(),
            Postcard,
            Config::default(),
        );

        assert_eq!(
            client.call(&Req::Echo("hello".into()), None).await,
            Ok(Resp::Echo("hello".into()))
        );

        // Twenty calls at once, the first issued the slowest: they come back in the opposite
        // order, each to its own caller.
        let order = RefCell::new(Vec::new());
        coring::task::join_all((0..20u32).map(|tag| {
            let (client, order) = (&client, &order);
            async move {
                let ms = u64::from(20 - tag) * 30;
                let got = client.call(&Req::Sleep { ms, tag }, None).await;
                assert_eq!(got, Ok(Resp::Slept(tag)));
                order.borrow_mut().push(tag);
            }
        }))
        .await;
        let order = order.into_inner();
        assert_eq!(order.len(), 20);
        assert_ne!(
            order,
            (0..20).collect::<Vec<_>>(),
            "answered in issue order"
        );

        // The handler's own error, as a typed value.
        assert_eq!(
            client.call(&Req::Fail("lobby-9".into()), None).await,
            Err(RpcError::Fault(Fault::Handler(AppError::NoSuchRoom(
                "lobby-9".into()
            ))))
        );
        // A panic is a fault and the connection goes on.
        assert_eq!(
            client.call(&Req::Panic, None).await,
            Err(RpcError::Fault(Fault::Panicked))
        );
        assert_eq!(
            client.call(&Req::Echo("after".into()), None).await,
            Ok(Resp::Echo("after".into()))
        );

        // The client's deadline: it gives up, and the server stops the handler.
        let before = stopped.0.get();
        let t = Instant::now();
        assert_eq!(
            client
                .call(
                    &Req::Sleep { ms: 5000, tag: 1 },
                    Some(Duration::from_millis(100))
                )
                .await,
            Err(RpcError::TimedOut)
        );
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        until("the cancelled handler to stop", || {
            stopped.0.get() == before + 1
        })
        .await;

        // A future dropped before its answer cancels the call the same way.
        {
            let call = client.call(&Req::Sleep { ms: 5000, tag: 2 }, None);
            let _ = coring::time::timeout(Duration::from_millis(50), call).await;
        }
        until("the dropped call's handler to stop", || {
            stopped.0.get() == before + 2
        })
        .await;
        assert_eq!(client.in_flight(), 0);

        // The server's deadline (800 ms) caps a call that asked for none.
        assert_eq!(
            client.call(&Req::Sleep { ms: 5000, tag: 3 }, None).await,
            Err(RpcError::Fault(Fault::DeadlineExceeded))
        );

        // An answer over the server's 64 KiB frame limit: a fault, not a silence.
        match client.call(&Req::Big(100_000), None).await {
            Err(RpcError::Fault(Fault::BadAnswer(why))) => assert!(why.contains("over the limit")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            client.call(&Req::Big(10), None).await,
            Ok(Resp::Big(vec![7; 10]))
        );

        // Seventy calls at once against a limit of 64 in flight: six refused.
        let refused = Cell::new(0);
        coring::task::join_all((0..70u32).map(|tag| {
            let (client, refused) = (&client, &refused);
            async move {
                match client.call(&Req::Sleep { ms: 400, tag }, None).await {
                    Ok(Resp::Slept(t)) => assert_eq!(t, tag),
                    Err(RpcError::Fault(Fault::Overloaded)) => refused.set(refused.get() + 1),
                    other => panic!("{other:?}"),
                }
            }
        }))
        .await;
        assert_eq!(refused.get(), 6);

        // A request the server does not know, from a newer client on another connection: a
        // fault for that call, and the connection goes on.
        let newer: Client<NewerReq, Resp, AppError, Postcard> = Client::new(
            TcpStream::connect(addr).await.unwrap(),
            Postcard,
            Config::default(),
        );
        match newer.call(&NewerReq::Teleport(3), None).await {
            Err(RpcError::Fault(Fault::BadRequest(_))) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            newer.call(&NewerReq::Echo("still here".into()), None).await,
            Ok(Resp::Echo("still here".into()))
        );

        // A request over the client's own limit is refused before it is sent.
        let small: Client<Req, Resp, AppError, Postcard> = Client::new(
            TcpStream::connect(addr).await.unwrap(),
            Postcard,
            Config {
                max_frame: 100,
                ..Config::default()
            },
        );
        assert!(matches!(
            small.call(&Req::Echo("x".repeat(200)), None).await,
            Err(RpcError::Request(_))
        ));

        client.close().await;
        newer.close().await;
        small.close().await;
        until("the three connections to end", || {
            outcomes.borrow().len() == 3
        })
        .await;
        let outcomes = outcomes.borrow();
        let stats = outcomes
            .iter()
            .map(|o| o.clone().expect("served to the end"))
            .max_by_key(|s| s.calls)
            .unwrap();
        assert_eq!(stats.calls, 1 + 20 + 2 + 1 + 2 + 1 + 2 + 70);
        // The call that timed out on the client sent its timeout along: the server's deadline
        // and the client's cancel race for it. The dropped call asked for none: a cancel.
        assert!(stats.cancelled >= 1, "{stats:?}");
        assert_eq!(stats.cancelled + stats.deadlines, 3, "{stats:?}");
        assert_eq!(stats.panicked, 1);
        assert_eq!(stats.refused, 6);
        assert_eq!(stats.handler_errors, 1);
        assert_eq!(stats.unsendable, 1, "the answer too large");
    });
}

#[coring::test]
fn calls_end_with_the_connection_under_them() {
    coring::block_on(async {
        // A server that reads the first call and hangs up.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr();
        coring::spawn_local(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (_, _) = stream.read(Vec::with_capacity(64)).await;
            drop(stream);
        });
        let client: Client<Req, Resp, AppError, Json> = Client::new(
            TcpStream::connect(addr).await.unwrap(),
            Json,
            Config::default(),
        );
        let failures = RefCell::new(Vec::new());
        coring::task::join_all((0..3).map(|i| {
            let (client, failures) = (&client, &failures);
            async move {
                let got = client.call(&Req::Sleep { ms: 10, tag: i }, None).await;
                failures.borrow_mut().push(got);
            }
        }))
        .await;
        for got in failures.into_inner() {
            assert!(matches!(got, Err(RpcError::Closed(_))), "{got:?}");
        }
        // And calls made afterwards fail at once, saying why.
        match client.call(&Req::Echo("late".into()), None).await {
            Err(RpcError::Closed(why)) => assert!(!why.is_empty()),
            other => panic!("{other:?}"),
        }
    });
}

#[coring::test]
fn json_calls_over_a_unix_stream_and_over_tls() {
    use coring_protocols::tls::rustls::pki_types::ServerName;
    use coring_protocols::tls::{self, TlsAcceptor, TlsConnector, rustls};

    let path = std::env::temp_dir().join(coring::__test::unique("rpc.sock"));
    let _ = std::fs::remove_file(&path);
    let dir = std::env::temp_dir().join(coring::__test::unique("rpc-tls"));
    let pem = coring_tests::pki::SelfSigned::write(&dir, &["localhost"]);
    let server_config =
        std::sync::Arc::new(tls::server_config_from_pem(&pem.cert_path, &pem.key_path).unwrap());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem.cert.clone()).unwrap();
    let client_config = std::sync::Arc::new(tls::client_config(roots).unwrap());
    let at = path.clone();
    coring::block_on(async move {
        let stopped = Rc::new(Stopped::default());
        let outcomes = Rc::new(RefCell::new(Vec::new()));

        let unix = UnixListener::bind(&at).unwrap();
        let (stopped2, outcomes2) = (stopped.clone(), outcomes.clone());
        coring::spawn_local(async move {
            let (stream, _) = unix.accept().await.unwrap();
            spawn_serve(stream, Json, Config::default(), stopped2, outcomes2);
        });
        let client: Client<Req, Resp, AppError, Json> = Client::new(
            UnixStream::connect(&at).await.unwrap(),
            Json,
            Config::default(),
        );
        for i in 0..50 {
            let text = format!("unix {i} \"quoted\" \n");
            assert_eq!(
                client.call(&Req::Echo(text.clone()), None).await,
                Ok(Resp::Echo(text))
            );
        }
        client.close().await;

        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr();
        let (stopped2, outcomes2) = (stopped.clone(), outcomes.clone());
        coring::spawn_local(async move {
            let (stream, _) = tcp.accept().await.unwrap();
            let tls = TlsAcceptor::new(server_config)
                .accept(stream)
                .await
                .unwrap();
            spawn_serve(tls, Json, Config::default(), stopped2, outcomes2);
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::new(client_config)
            .connect(ServerName::try_from("localhost").unwrap(), stream)
            .await
            .unwrap();
        let client: Client<Req, Resp, AppError, Json> = Client::new(tls, Json, Config::default());
        let answers = RefCell::new(0);
        coring::task::join_all((0..10u32).map(|tag| {
            let (client, answers) = (&client, &answers);
            async move {
                let got = client.call(&Req::Sleep { ms: 30, tag }, None).await;
                assert_eq!(got, Ok(Resp::Slept(tag)));
                *answers.borrow_mut() += 1;
            }
        }))
        .await;
        assert_eq!(answers.into_inner(), 10);
        assert_eq!(
            client.call(&Req::Big(200_000), None).await,
            Ok(Resp::Big(vec![7; 200_000]))
        );
        client.close().await;
        until("both connections to end", || outcomes.borrow().len() == 2).await;
        for outcome in outcomes.borrow().iter() {
            assert!(outcome.is_ok(), "{outcome:?}");
        }
    });
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JSON wire from Python. `client PORT`: pipelines four calls (one of them unreadable, one
/// that fails, one slow) and prints each answer as a JSON line in the order they came.
/// `server`: listens, prints its port, takes three calls, answers them in reverse order (the
/// second with a fault), then answers a fourth only after its cancel, which it reports.
const PYTHON_PEER: &str = r#"
import json, socket, struct, sys

def exact(conn, n):
    data = b""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            return None
        data += more
    return data

def read(conn):
    head = exact(conn, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    return json.loads(exact(conn, n))

def write(conn, message):
    data = json.dumps(message).encode()
    conn.sendall(struct.pack(">I", len(data)) + data)

if sys.argv[1] == "client":
    conn = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    write(conn, {"id": 1, "kind": "call", "timeout_ms": None, "body": {"Sleep": {"ms": 300, "tag": 5}}})
    write(conn, {"id": 2, "kind": "call", "body": {"Echo": "from python"}})
    write(conn, {"id": 3, "kind": "call", "body": {"Shout": 1}})
    write(conn, {"id": 4, "kind": "call", "timeout_ms": 1000, "body": {"Fail": "attic"}})
    for _ in range(4):
        print(json.dumps(read(conn)), flush=True)
    conn.shutdown(socket.SHUT_WR)
    assert read(conn) is None
else:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    print(server.getsockname()[1], flush=True)
    conn, _ = server.accept()
    calls = [read(conn) for _ in range(3)]
    for call in reversed(calls):
        if call["body"] == {"Echo": "fail me"}:
            write(conn, {"id": call["id"], "kind": "fail", "body": {"Handler": {"NoSuchRoom": "cellar"}}})
        else:
            write(conn, {"id": call["id"], "kind": "reply", "body": {"Echo": call["body"]["Echo"].upper()}})
    slow = read(conn)
    cancel = read(conn)
    print(json.dumps([slow["timeout_ms"], cancel]), flush=True)
    write(conn, {"id": slow["id"], "kind": "reply", "body": {"Echo": "too late"}})
    write(conn, {"id": 999, "kind": "reply", "body": {"Echo": "nobody asked"}})
    last = read(conn)
    write(conn, {"id": last["id"], "kind": "reply", "body": {"Echo": "last"}})
    read(conn)
"#;

#[coring::test]
async fn a_python_client_on_the_json_wire() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().port();
    let python = std::thread::spawn(move || {
        Command::new("timeout")
            .args([
                "20",
                "python3",
                "-c",
                PYTHON_PEER,
                "client",
                &port.to_string(),
            ])
            .stderr(Stdio::inherit())
            .output()
    });
    let (stream, _) = listener.accept().await.unwrap();
    let stats = rpc::serve(stream, Json, Config::default(), handler(Rc::default()))
        .await
        .unwrap();
    assert_eq!((stats.calls, stats.replies, stats.refused), (4, 2, 1));
    assert_eq!(stats.handler_errors, 1);
    // The connection is closed once `serve` returns: the client's last read sees its end.
    let out = python.join().unwrap().expect("python3");
    assert!(out.status.success(), "{:?}", out.status);
    let answers: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id = |id: u64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer to {id}: {answers:?}"))
    };
    assert_eq!(by_id(2)["kind"], "reply");
    assert_eq!(by_id(2)["body"], serde_json::json!({"Echo": "from python"}));
    assert_eq!(by_id(3)["kind"], "fail");
    assert!(by_id(3)["body"]["BadRequest"].is_string(), "{answers:?}");
    assert_eq!(
        by_id(4)["body"],
        serde_json::json!({"Handler": {"NoSuchRoom": "attic"}})
    );
    assert_eq!(by_id(1)["body"], serde_json::json!({"Slept": 5}));
    // The slow call, first in, came back last.
    assert_eq!(answers.last().unwrap()["id"], 1);
}

#[coring::test]
fn our_client_against_a_python_server() {
    let mut child = Command::new("timeout")
        .args(["20", "python3", "-c", PYTHON_PEER, "server"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], line.trim().parse::<u16>().unwrap()).into();
    coring::block_on(async move {
        let client: Client<Req, Resp, AppError, Json> = Client::new(
            TcpStream::connect(addr).await.unwrap(),
            Json,
            Config::default(),
        );
        let results = RefCell::new(Vec::new());
        coring::task::join_all(["one", "fail me", "three"].into_iter().map(|text| {
            let (client, results) = (&client, &results);
            async move {
                let got = client.call(&Req::Echo(text.into()), None).await;
                results.borrow_mut().push((text, got));
            }
        }))
        .await;
        // Python answered the three in reverse order; each caller got its own answer.
        let results = results.into_inner();
        assert_eq!(results.len(), 3);
        for (text, got) in results {
            match text {
                "fail me" => assert_eq!(
                    got,
                    Err(RpcError::Fault(Fault::Handler(AppError::NoSuchRoom(
                        "cellar".into()
                    ))))
                ),
                _ => assert_eq!(got, Ok(Resp::Echo(text.to_uppercase()))),
            }
        }
        // A call given up on: the server sees its timeout and then the cancel; the late
        // answer, and one to an id never used, are let go.
        assert_eq!(
            client
                .call(&Req::Echo("slow".into()), Some(Duration::from_millis(150)))
                .await,
            Err(RpcError::TimedOut)
        );
        assert_eq!(
            client.call(&Req::Echo("next".into()), None).await,
            Ok(Resp::Echo("last".into()))
        );
    });
    let mut report = String::new();
    stdout.read_line(&mut report).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report[0], 150);
    assert_eq!(report[1]["kind"], "cancel");
    assert!(child.wait().unwrap().success());
}
