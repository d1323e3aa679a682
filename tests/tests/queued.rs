//! Queued endpoints and queued senders over real sockets.
//!
//! The endpoint sits behind coring's HTTP server and curl drives it as a client and an
//! operator would: submissions answered 202 with their id, a full queue and a paused one
//! answered 503, processing paused and resumed, failures and a panic in the error queue,
//! inspected, retried and popped by id. Shutdown hands back every request it held, each by
//! id. The sender delivers to an HTTP server that fails on a schedule: retries on the
//! application's back-off, the error queue, a manual retry and the keeper's, a sequenced
//! group held behind its failed message while other groups go on, and its shutdown report.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coring_protocols::client::{Client, ClientRequest};
use coring_protocols::http1::Response;
use coring_protocols::queued::sender::{QueuedSender, SendRefused, SenderConfig};
use coring_protocols::queued::{Config, QueuedEndpoint, Refusal};
use coring_protocols::serve::{self, Router};
use coring_tests::{TestServer, serve};

/// curl drives the endpoint (a Linux program here: not under Wine).
#[cfg(target_os = "linux")]
mod over_http {
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use coring_protocols::queued;

    /// curl's answer: status and body.
    fn curl(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "5",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            url,
        ]);
        if let Some(body) = body {
            cmd.args(["--data-binary", body]);
        }
        let out = cmd.output().expect("curl (.ci/run installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// Polls the endpoint's stats until `field` reads `value` (within 5 s).
    fn wait_for(base: &str, field: &str, value: &str) {
        let wanted = format!("\"{field}\":{value}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, stats) = curl("GET", &format!("{base}/admin/orders/stats"), None);
            if stats.contains(&wanted) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{wanted} never seen; last {stats}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An order service: POST /orders queues the body; the handler rejects orders containing
    /// "fail" while `reject` is set and panics on "panic"; handled orders are recorded in order.
    fn order_service(reject: Arc<AtomicBool>, handled: Arc<Mutex<Vec<String>>>) -> TestServer {
        serve(serve::Config::default(), move || {
            let endpoint = QueuedEndpoint::new(
                Config {
                    capacity: 4,
                    workers: 1,
                },
                move |order: String| {
                    let (reject, handled) = (reject.clone(), handled.clone());
                    async move {
                        if order.contains("panic") {
                            panic!("order {order} is poison");
                        }
                        if order.contains("fail") && reject.load(Ordering::SeqCst) {
                            return Err(format!("rejected: {order}"));
                        }
                        handled.lock().unwrap().push(order);
                        Ok(())
                    }
                },
            );
            let submit = endpoint.clone();
            let router = Router::new().route("POST", "/orders", move |req, _p| {
                let order = String::from_utf8_lossy(req.body()).into_owned();
                let answer = queued::http::submitted(submit.submit(order));
                async move { answer }
            });
            queued::http::routes(router, "/admin/orders", &endpoint)
        })
    }

    #[coring::test]
    fn an_endpoint_behind_http_is_paused_inspected_and_retried_by_an_operator() {
        let reject = Arc::new(AtomicBool::new(true));
        let handled = Arc::new(Mutex::new(Vec::new()));
        let server = order_service(reject.clone(), handled.clone());
        let base = format!("http://{}", server.addr);
        let orders = format!("{base}/orders");
        let admin = format!("{base}/admin/orders");

        assert_eq!(
            curl("POST", &orders, Some("ok-1")),
            (202, "{\"id\":1}".into())
        );
        wait_for(&base, "processed", "1");
        assert_eq!(curl("POST", &orders, Some("fail-2")).0, 202);
        assert_eq!(curl("POST", &orders, Some("panic-3")).0, 202);
        wait_for(&base, "errors", "2");
        let (status, errors) = curl("GET", &format!("{admin}/errors"), None);
        assert_eq!(status, 200);
        assert!(
            errors.contains("{\"id\":2,\"error\":\"rejected: fail-2\",\"attempts\":1}"),
            "{errors}"
        );
        assert!(
            errors.contains("\"id\":3,\"error\":\"the handler panicked: order panic-3 is poison\""),
            "{errors}"
        );
        let (status, entry) = curl("GET", &format!("{admin}/errors/2"), None);
        assert_eq!(status, 200);
        assert!(entry.contains("\"request\":\"\\\"fail-2\\\"\""), "{entry}");
        assert_eq!(curl("GET", &format!("{admin}/errors/99"), None).0, 404);

        // Processing paused: requests queue up to the capacity, then are refused.
        assert_eq!(
            curl("POST", &format!("{admin}/pause-processing"), None).0,
            200
        );
        for n in 4..=7 {
            assert_eq!(curl("POST", &orders, Some(&format!("ok-{n}"))).0, 202);
        }
        let (status, body) = curl("POST", &orders, Some("ok-8"));
        assert_eq!(
            (status, body.as_str()),
            (503, "{\"error\":\"the queue is full\"}")
        );
        wait_for(&base, "queued", "4");
        wait_for(&base, "processing", "false");
        // Accepting paused too: refused for that reason.
        assert_eq!(
            curl("POST", &format!("{admin}/pause-accepting"), None).0,
            200
        );
        let (status, body) = curl("POST", &orders, Some("ok-9"));
        assert_eq!(
            (status, body.as_str()),
            (503, "{\"error\":\"accepting is paused\"}")
        );
        assert_eq!(curl("POST", &format!("{admin}/resume"), None).0, 200);
        wait_for(&base, "processed", "5");

        // The cause of the rejection is fixed: entry 2 goes back through the handler; the poison
        // order is popped, and the queue is empty after.
        reject.store(false, Ordering::SeqCst);
        assert_eq!(
            curl("POST", &format!("{admin}/errors/2/retry"), None),
            (200, "{\"retried\":1}".into())
        );
        wait_for(&base, "processed", "6");
        let (status, popped) = curl("DELETE", &format!("{admin}/errors/3"), None);
        assert_eq!(status, 200);
        assert!(popped.contains("\"id\":3"), "{popped}");
        assert_eq!(curl("DELETE", &format!("{admin}/errors/3"), None).0, 404);
        assert_eq!(
            curl("POST", &format!("{admin}/errors/retry"), None).1,
            "{\"retried\":0}"
        );
        assert_eq!(
            curl("DELETE", &format!("{admin}/errors"), None).1,
            "{\"cleared\":0}"
        );
        wait_for(&base, "errors", "0");
        wait_for(&base, "refused_full", "1");
        wait_for(&base, "refused_paused", "1");
        wait_for(&base, "retried", "1");
        assert_eq!(
            *handled.lock().unwrap(),
            ["ok-1", "ok-4", "ok-5", "ok-6", "ok-7", "fail-2"]
        );
    }
}

#[coring::test]
async fn shutdown_hands_back_every_request_it_held() {
    let endpoint = QueuedEndpoint::new(
        Config {
            capacity: 64,
            workers: 1,
        },
        |n: u32| async move {
            if n == 2 {
                return Err("two is refused");
            }
            coring::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        },
    );
    let ids: Vec<u64> = (1..=10).map(|n| endpoint.submit(n).unwrap()).collect();
    coring::time::sleep(Duration::from_millis(20)).await;
    let report = endpoint.shutdown(Duration::from_millis(250)).await;
    assert!(report.drained >= 1, "{report:?}");
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].job.item, 2);
    assert_eq!(report.errors[0].error, "two is refused");
    assert_eq!(
        report.interrupted.len(),
        1,
        "one handler was mid-sleep at the deadline"
    );
    assert!(!report.unprocessed.is_empty());
    // Every id is accounted for exactly once: handled, in error, interrupted or unprocessed.
    let mut seen: Vec<u64> = report
        .unprocessed
        .iter()
        .chain(&report.interrupted)
        .map(|j| j.id)
        .chain(report.errors.iter().map(|f| f.job.id))
        .collect();
    assert_eq!(seen.len() as u64 + report.drained, ids.len() as u64);
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len() as u64 + report.drained,
        ids.len() as u64,
        "no id twice"
    );
    let order: Vec<u32> = report.unprocessed.iter().map(|j| j.item).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order, sorted,
        "unprocessed requests come back in queue order"
    );
    assert!(matches!(
        endpoint.submit(11),
        Err((Refusal::ShuttingDown, 11))
    ));

    // Paused processing drains nothing: everything comes back unprocessed.
    let paused = QueuedEndpoint::new(Config::default(), |_: u32| async { Ok::<(), String>(()) });
    paused.set_processing(false);
    for n in 0..5 {
        paused.submit(n).unwrap();
    }
    let report = paused.shutdown(Duration::from_millis(100)).await;
    assert_eq!((report.drained, report.unprocessed.len()), (0, 5));
}

/// An HTTP peer that answers `POST /deliver` with 500 as many times as `failures` says for
/// that body, then 200, recording what it took in order; `/slow` takes 100 ms.
fn flaky_peer(
    failures: Arc<Mutex<HashMap<String, u32>>>,
    delivered: Arc<Mutex<Vec<String>>>,
) -> TestServer {
    serve(serve::Config::default(), move || {
        let (failures, delivered) = (failures.clone(), delivered.clone());
        let slow = delivered.clone();
        Router::new()
            .route("POST", "/deliver", move |req, _p| {
                let body = String::from_utf8_lossy(req.body()).into_owned();
                let fail = match failures.lock().unwrap().get_mut(&body) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                };
                if !fail {
                    delivered.lock().unwrap().push(body);
                }
                async move { Response::new(if fail { 500 } else { 200 }) }
            })
            .route("POST", "/slow", move |req, _p| {
                let body = String::from_utf8_lossy(req.body()).into_owned();
                let slow = slow.clone();
                async move {
                    coring::time::sleep(Duration::from_millis(100)).await;
                    slow.lock().unwrap().push(body);
                    Response::new(200)
                }
            })
    })
}

/// A send function posting the message to `url` with the engine's HTTP client.
fn post_to(
    url: String,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>>>> {
    let client = Client::default();
    move |message: String| {
        let (client, url) = (client.clone(), url.clone());
        Box::pin(async move {
            let response = client
                .send(ClientRequest::new("POST", &url).body(message))
                .await
                .map_err(|e| e.to_string())?;
            match response.status {
                200 => Ok(()),
                status => Err(format!("status {status}")),
            }
        })
    }
}

#[coring::test]
async fn a_sender_retries_on_its_backoff_then_keeps_and_redrives_failures() {
    let failures = Arc::new(Mutex::new(HashMap::from([
        ("a".to_owned(), 2),
        ("b".to_owned(), 4),
        ("k".to_owned(), 4),
    ])));
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let peer = flaky_peer(failures.clone(), delivered.clone());
    let url = format!("http://{}/deliver", peer.addr);
    let waits = Rc::new(std::cell::RefCell::new(Vec::new()));
    let recorded = waits.clone();
    let sender = QueuedSender::new(
        SenderConfig {
            max_attempts: 3,
            keeper: None,
            ..SenderConfig::default()
        },
        post_to(url.clone()),
        move |attempts| {
            recorded.borrow_mut().push(attempts);
            Duration::from_millis(10 * u64::from(attempts))
        },
    );
    sender.send("a".into()).unwrap();
    let b = sender.send("b".into()).unwrap();
    sender.send("c".into()).unwrap();
    assert!(sender.flush(Duration::from_secs(5)).await);
    // a: two failures, then sent; b: three failures, then kept; c: sent at once (while a
    // waits out its back-off: an unsequenced sender keeps no order).
    assert_eq!(*delivered.lock().unwrap(), ["c", "a"]);
    let mut asked = waits.borrow().clone();
    asked.sort();
    assert_eq!(
        asked,
        [1, 1, 2, 2],
        "the back-off function, after each failure but the last"
    );
    let errors = sender.errors();
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].id, errors[0].attempts), (b, 3));
    assert_eq!(errors[0].last_error.as_deref(), Some("status 500"));
    // The operator sends it back: one more failure (the peer's fourth), then it goes.
    assert!(sender.retry(b));
    assert!(!sender.retry(b), "no longer in the error queue");
    assert!(sender.flush(Duration::from_secs(5)).await);
    assert_eq!(*delivered.lock().unwrap(), ["c", "a", "b"]);
    let stats = sender.stats();
    assert_eq!(
        (stats.sent, stats.exhausted, stats.redriven, stats.errors),
        (3, 1, 1, 0)
    );
    assert_eq!(stats.attempts, 3 + (3 + 2) + 1, "a, b over two rounds, c");

    // A keeper does the same by itself.
    let kept = QueuedSender::new(
        SenderConfig {
            max_attempts: 2,
            keeper: Some(Duration::from_millis(150)),
            ..SenderConfig::default()
        },
        post_to(url),
        |_| Duration::from_millis(5),
    );
    kept.send("k".into()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !delivered.lock().unwrap().contains(&"k".to_owned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the keeper never drove k again: {:?}",
            kept.stats()
        );
        coring::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(kept.stats().redriven >= 2, "{:?}", kept.stats());
}

#[coring::test]
async fn a_sequenced_sender_holds_a_group_behind_its_failed_message() {
    let failures = Arc::new(Mutex::new(HashMap::from([
        ("g1-1".to_owned(), 2),
        ("g3-1".to_owned(), 2),
    ])));
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let peer = flaky_peer(failures.clone(), delivered.clone());
    let sender = QueuedSender::sequenced(
        SenderConfig {
            max_attempts: 2,
            workers: 4,
            keeper: None,
            ..SenderConfig::default()
        },
        post_to(format!("http://{}/deliver", peer.addr)),
        |_| Duration::from_millis(10),
    );
    let g1_first = sender.send_in("g1", "g1-1".into()).unwrap();
    for m in ["g1-2", "g1-3"] {
        sender.send_in("g1", m.into()).unwrap();
    }
    for m in ["g2-1", "g2-2", "g2-3"] {
        sender.send_in("g2", m.into()).unwrap();
    }
    let g3_first = sender.send_in("g3", "g3-1".into()).unwrap();
    sender.send_in("g3", "g3-2".into()).unwrap();
    // Only what is not held behind g1-1 and g3-1 (each out of attempts) goes.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sender.stats().errors < 2 || delivered.lock().unwrap().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "{:?}", sender.stats());
        coring::time::sleep(Duration::from_millis(10)).await;
    }
    // Held messages stay held however long one waits.
    coring::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*delivered.lock().unwrap(), ["g2-1", "g2-2", "g2-3"]);
    assert_eq!(sender.stats().errors, 2);
    assert_eq!(sender.stats().queued, 3, "g1-2, g1-3 and g3-2 wait");

    // Retried, g1-1 goes first and its group follows in order.
    assert!(sender.retry(g1_first));
    // Removed, g3-1 lets g3-2 go.
    assert!(sender.pop_error(g3_first).is_some());
    assert!(sender.flush(Duration::from_secs(5)).await);
    let delivered = delivered.lock().unwrap().clone();
    let of = |g: &str| -> Vec<String> {
        delivered
            .iter()
            .filter(|m| m.starts_with(g))
            .cloned()
            .collect()
    };
    assert_eq!(of("g1"), ["g1-1", "g1-2", "g1-3"]);
    assert_eq!(of("g2"), ["g2-1", "g2-2", "g2-3"]);
    assert_eq!(of("g3"), ["g3-2"]);
}

#[coring::test]
async fn a_sender_shutdown_accounts_for_every_message() {
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let peer = flaky_peer(Arc::default(), delivered.clone());
    let sender = QueuedSender::new(
        SenderConfig {
            keeper: Some(Duration::from_secs(1)),
            ..SenderConfig::default()
        },
        post_to(format!("http://{}/slow", peer.addr)),
        |_| Duration::from_millis(10),
    );
    for n in 0..6 {
        sender.send(format!("m{n}")).unwrap();
    }
    let report = sender.shutdown(Duration::from_millis(250)).await;
    assert!(report.drained >= 1, "{report:?}");
    assert_eq!(report.interrupted.len(), 1, "{report:?}");
    assert_eq!(
        report.drained as usize + report.unsent.len() + report.interrupted.len(),
        6
    );
    assert!(matches!(
        sender.send("late".into()),
        Err((SendRefused::ShuttingDown, _))
    ));
}
