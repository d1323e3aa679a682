//! The connection's deadlines and endings under the virtual clock: slow heads (slowloris),
//! stalled bodies, idle connections, shutdown drains, half-closed clients and lingering closes.

use std::time::Duration;

use super::pair::Pair;
use crate::http1::{ServerConfig, Timer};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";

fn config() -> ServerConfig {
    ServerConfig {
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        shutdown_drain: Duration::from_millis(250),
        ..ServerConfig::default()
    }
}

#[test]
fn a_head_trickled_a_byte_at_a_time_runs_out_of_time_from_its_first_byte() {
    let mut pair = Pair::ok(config());
    let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ";
    // One byte a second, forever: each byte is progress, but the head's clock keeps running.
    for (i, &b) in head.iter().chain(b"aaaaaaaaaaaaaaaaaaaa").enumerate() {
        pair.send_after(Duration::from_secs(i as u64), &[b]);
    }
    pair.drive();
    assert!(pair.server.is_closed());
    assert!(pair.seen.is_empty() && pair.written.is_empty());
    // Closed 10 s after the first byte arrived (sent at 0, 1 ms on the wire).
    assert_eq!(
        pair.elapsed(),
        Duration::from_secs(10) + Duration::from_millis(1)
    );
}

#[test]
fn an_idle_connection_closes_after_the_idle_timeout_and_a_busy_one_does_not() {
    let mut pair = Pair::ok(config());
    for i in 0..5 {
        pair.send_after(Duration::from_secs(50 * i), GET);
    }
    pair.drive_for(Duration::from_secs(210));
    assert_eq!(
        pair.seen.len(),
        5,
        "busy: a request every 50 s keeps it open"
    );
    assert!(!pair.server.is_closed());
    assert_eq!(pair.server.timer().map(|(t, _)| t), Some(Timer::Idle));
    pair.drive_for(Duration::from_secs(61));
    assert!(pair.server.is_closed(), "idle 60 s: closed");
}

#[test]
fn a_stalled_body_times_out_and_a_slow_one_that_keeps_coming_does_not() {
    let mut pair = Pair::ok(config());
    pair.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n");
    // A byte every 4 s: under the 5 s body timeout each time.
    for i in 0..10 {
        pair.send_after(Duration::from_secs(4 * (i + 1)), b"x");
    }
    pair.drive_for(Duration::from_secs(45));
    assert_eq!(pair.seen.len(), 1);
    assert_eq!(pair.seen[0].body, b"xxxxxxxxxx");
    let mut stalled = Pair::ok(config());
    stalled.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nxx");
    stalled.drive();
    assert!(stalled.server.is_closed() && stalled.seen.is_empty());
    assert_eq!(
        stalled.elapsed(),
        Duration::from_secs(5) + Duration::from_millis(1)
    );
}

#[test]
fn at_shutdown_an_idle_connection_drains_and_answers_what_arrives_with_close() {
    let mut pair = Pair::ok(config());
    pair.send(GET);
    pair.drive_for(Duration::from_secs(1));
    pair.server.begin_shutdown(pair.now);
    assert_eq!(pair.server.timer().map(|(t, _)| t), Some(Timer::Idle));
    // A request already on its way is answered, and told the connection closes.
    pair.send_after(Duration::from_millis(100), GET);
    pair.drive();
    let (responses, _) = pair.responses();
    assert_eq!(responses.len(), 2);
    assert!(
        !responses[1].keep_alive,
        "the answer during the shutdown closes"
    );
    // A quiet one closes when the drain ends.
    let mut quiet = Pair::ok(config());
    quiet.send(GET);
    quiet.drive_for(Duration::from_secs(1));
    let began = quiet.now;
    quiet.server.begin_shutdown(began);
    quiet.drive();
    assert!(quiet.server.is_closed());
    assert_eq!(quiet.now - began, Duration::from_millis(250));
}

#[test]
fn at_shutdown_requests_already_pipelined_are_answered_the_last_with_close() {
    let mut pair = Pair::ok(config());
    pair.server.begin_shutdown(pair.now);
    // Three whole requests and the start of a fourth arrive together.
    let mut wire = GET.repeat(3);
    wire.extend_from_slice(b"GET /cut HTTP/1.1\r\nHo");
    pair.send(&wire);
    pair.drive();
    let (responses, _) = pair.responses();
    let keep: Vec<bool> = responses.iter().map(|r| r.keep_alive).collect();
    assert_eq!(
        keep,
        vec![true, true, false],
        "each whole request that reached the server is answered; the last says close"
    );
    assert!(
        pair.server.is_closed(),
        "the cut-off fourth is not waited for"
    );
}

#[test]
fn a_half_closed_client_gets_its_answers_then_the_connection_closes() {
    let mut pair = Pair::ok(config());
    let mut wire = GET.repeat(3);
    wire.extend_from_slice(b"GET /cut HTTP/1.1\r\nHo");
    pair.send(&wire);
    pair.close_client();
    pair.drive();
    assert_eq!(pair.statuses(), vec![200, 200, 200]);
    assert!(
        pair.server.is_closed(),
        "a head cut by the end of the stream is dropped"
    );
}

#[test]
fn after_a_closing_answer_the_connection_lingers_then_closes() {
    let mut pair = Pair::ok(config());
    pair.send(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    // The client keeps sending after the close: dropped, until the linger ends.
    pair.send_after(Duration::from_millis(500), &vec![b'x'; 1000]);
    pair.drive_for(Duration::from_secs(1));
    assert!(!pair.server.is_closed());
    assert_eq!(pair.server.timer().map(|(t, _)| t), Some(Timer::Linger));
    pair.drive();
    assert!(pair.server.is_closed());
    assert_eq!(pair.statuses(), vec![200]);
    assert_eq!(pair.seen.len(), 1, "nothing after the close is served");
}
