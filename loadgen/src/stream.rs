//! The connection loop every request/response workload over TCP shares: connect, keep up to
//! `pipeline` requests in flight (or send on the open model's schedule), match responses to
//! requests in order, time each one, and reconnect after a failure.
//!
//! Each connection is two tasks over one socket. The writer sends as many requests as the
//! window (and, in the open model, the schedule) allows in one write; the reader receives into
//! the core's buffer pool, hands the bytes to the workload's [`Exchange`] and completes the
//! oldest requests in flight, all at the instant the buffer arrived.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coring::time::{sleep, sleep_until, timeout, timeout_at};

use crate::link::{DialFailure, Link, TlsDial, connect};
use crate::run::{CoreRun, Lane};

/// What the workload says about one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As expected.
    Ok,
    /// Well framed but not what was expected; counted under this error kind.
    Wrong(Wrong),
}

/// Ways a well-framed response can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrong {
    /// A status other than the expected one (`status_NNN`).
    Status(u16),
    /// A body of another length than expected (`body_length`).
    BodyLength,
}

/// One response, as the workload framed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Whether it is what was asked for.
    pub verdict: Verdict,
    /// The server will close the connection after it.
    pub close: bool,
}

/// A workload's protocol on one connection (a new one per connection).
pub trait Exchange: 'static {
    /// The wire bytes of the next `k` requests.
    fn requests(&mut self, k: usize) -> Bytes;
    /// Consumes received bytes, calling `reply` for each response they complete, in order.
    /// `Err(kind)`: the bytes break the protocol; the connection is closed and `kind` counted.
    fn receive(&mut self, input: &[u8], reply: &mut dyn FnMut(Reply)) -> Result<(), &'static str>;
    /// The server closed its side: a response delimited by the close completes, or the bytes
    /// so far were cut short (`Err(kind)`).
    fn closed(&mut self, reply: &mut dyn FnMut(Reply)) -> Result<(), &'static str>;
    /// Bytes to send once, before any request (an opening handshake), if the protocol has one.
    fn opening(&mut self) -> Option<Bytes> {
        None
    }
    /// Reads the answer to the opening from the bytes received so far: `Ok(Some(n))` once it is
    /// complete in their first `n` bytes. `Err(kind)`: refused or malformed.
    fn opened(&mut self, _input: &[u8]) -> Result<Option<usize>, &'static str> {
        Ok(Some(0))
    }
}

/// A request written and not yet answered.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// Where its latency counts from: when it was written, or when it was due (open model).
    start: Instant,
    /// When it was written (its timeout counts from here).
    written: Instant,
}

#[derive(Debug, Default)]
struct Window {
    in_flight: VecDeque<InFlight>,
    /// The writer, waiting for room.
    writer: Option<Waker>,
    /// The connection is finished with; the writer stops.
    dead: bool,
}

impl Window {
    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

struct Connection<E> {
    stream: Link,
    window: RefCell<Window>,
    exchange: RefCell<E>,
}

/// Error kind of a failed engine operation.
pub fn error_kind(e: &coring::Error) -> &'static str {
    use coring::ErrorKind as K;
    match e.kind() {
        K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted => "reset",
        K::ConnectionRefused => "connect_refused",
        K::TimedOut => "timeout",
        K::TooManyOpenFiles => "too_many_open_files",
        K::AddrNotAvailable => "no_local_ports",
        _ => "io",
    }
}

/// Drives connection slot `lane` against `addr` (over TLS when `tls` says so) until the run
/// ends, with a fresh `make()` exchange per connection.
pub async fn drive<E: Exchange>(
    lane: Lane,
    addr: SocketAddr,
    tls: Option<&TlsDial>,
    make: impl Fn() -> E,
) {
    let run = &lane.run;
    let options = &run.options;
    while !run.stop_sending(Instant::now()) {
        let stream = match timeout(options.timeout, connect(addr, tls)).await {
            Ok(Ok(s)) => s,
            Ok(Err(DialFailure::Handshake(kind))) => {
                run.rec.borrow_mut().error(kind);
                sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Err(DialFailure::Connect(kind))) => {
                run.rec.borrow_mut().error(kind);
                // Do not hammer a server that refuses: retry ten times a second.
                sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                run.rec.borrow_mut().error("connect_timeout");
                continue;
            }
        };
        let mut exchange = make();
        if let Some(hello) = exchange.opening() {
            let opened = timeout(options.timeout, open(&stream, hello, &mut exchange)).await;
            let failure = match opened {
                Ok(Ok(())) => None,
                Ok(Err(kind)) => Some(kind),
                Err(_) => Some("handshake_timeout"),
            };
            if let Some(kind) = failure {
                run.rec.borrow_mut().error(kind);
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let conn = Rc::new(Connection {
            stream,
            window: RefCell::new(Window::default()),
            exchange: RefCell::new(exchange),
        });
        let mut writer = coring::spawn_local(write_loop(
            Rc::clone(&conn),
            Rc::clone(run),
            lane.schedule.clone(),
        ));
        read_loop(&conn, run).await;
        let mut window = conn.window.borrow_mut();
        window.dead = true;
        window.wake_writer();
        // Requests the run no longer waits for are not failures; the others were dropped with
        // their connection and are counted.
        if !run.stop_sending(Instant::now()) {
            run.rec.borrow_mut().dropped += window.in_flight.len() as u64;
        }
        drop(window);
        writer.abort();
    }
}

/// Sends the exchange's opening and reads until its answer is complete. Nothing may follow
/// the answer before a request is sent.
async fn open<E: Exchange>(
    stream: &Link,
    hello: Bytes,
    exchange: &mut E,
) -> Result<(), &'static str> {
    stream.write_all(hello).await?;
    let mut reader = stream.reader();
    let mut answer = Vec::new();
    loop {
        match reader.next().await {
            Ok(Some(buf)) => answer.extend_from_slice(&buf),
            Ok(None) => return Err("closed"),
            Err(kind) => return Err(kind),
        }
        if let Some(n) = exchange.opened(&answer)? {
            return if n == answer.len() {
                Ok(())
            } else {
                Err("unsolicited_response")
            };
        }
    }
}

async fn write_loop<E: Exchange>(
    conn: Rc<Connection<E>>,
    run: Rc<CoreRun>,
    schedule: Option<Rc<crate::run::Schedule>>,
) {
    let depth = run.options.pipeline;
    // The closed model refills a pipelined window once half of it is free: a few larger writes
    // cost both ends far less than one small write per response, and half the window stays in
    // flight meanwhile. The open model sends whatever is due.
    let refill = if schedule.is_some() {
        1
    } else {
        depth.div_ceil(2)
    };
    loop {
        let room = poll_fn(|cx| {
            let mut w = conn.window.borrow_mut();
            if w.dead {
                return Poll::Ready(None);
            }
            let room = depth - w.in_flight.len();
            if room >= refill {
                return Poll::Ready(Some(room));
            }
            w.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(room) = room else { return };
        let now = Instant::now();
        if run.stop_sending(now) {
            return;
        }
        let k = match &schedule {
            None => room,
            Some(s) => match s.due(now).min(room) {
                0 => {
                    sleep_until(s.next().min(run.send_until)).await;
                    continue;
                }
                due => due,
            },
        };
        let k = run.take(k, now);
        if k == 0 {
            return;
        }
        let bytes = conn.exchange.borrow_mut().requests(k);
        let len = bytes.len();
        {
            // Queued before the write is submitted: the response may be reaped first.
            let mut w = conn.window.borrow_mut();
            match &schedule {
                None => w.in_flight.extend((0..k).map(|_| InFlight {
                    start: now,
                    written: now,
                })),
                Some(s) => s.take(k, |due| {
                    w.in_flight.push_back(InFlight {
                        start: due,
                        written: now,
                    })
                }),
            }
        }
        if let Err(kind) = conn.stream.write_all(bytes).await {
            if !conn.window.borrow().dead {
                run.rec.borrow_mut().error(kind);
            }
            // The reader sees the end of the connection and finishes it.
            conn.stream.shutdown().await;
            return;
        }
        run.rec.borrow_mut().bytes_out(len, now);
    }
}

/// Reads and completes responses until the connection fails or closes, or the run is over.
async fn read_loop<E: Exchange>(conn: &Connection<E>, run: &CoreRun) {
    let mut reader = conn.stream.reader();
    let limit = run.options.timeout;
    loop {
        let oldest = conn.window.borrow().in_flight.front().map(|r| r.written);
        let deadline = oldest
            .map_or_else(|| Instant::now() + limit, |t| t + limit)
            .min(run.send_until);
        let received = timeout_at(deadline, reader.next()).await;
        let now = Instant::now();
        let buf = match received {
            Err(_) => {
                if now >= run.send_until
                    || (run.budget_spent() && conn.window.borrow().in_flight.is_empty())
                {
                    return;
                }
                if conn
                    .window
                    .borrow()
                    .in_flight
                    .front()
                    .is_some_and(|r| now.duration_since(r.written) >= limit)
                {
                    run.rec.borrow_mut().error("timeout");
                    return;
                }
                continue;
            }
            Ok(Err(kind)) => {
                if !conn.window.borrow().dead {
                    run.rec.borrow_mut().error(kind);
                }
                return;
            }
            Ok(Ok(None)) => {
                let mut close = false;
                let result = conn
                    .exchange
                    .borrow_mut()
                    .closed(&mut |reply| complete(conn, run, reply, now, &mut close));
                let unanswered = !conn.window.borrow().in_flight.is_empty();
                match result {
                    Err(kind) => run.rec.borrow_mut().error(kind),
                    Ok(()) if unanswered && !run.stop_sending(now) => {
                        run.rec.borrow_mut().error("closed")
                    }
                    Ok(()) => {}
                }
                return;
            }
            Ok(Ok(Some(buf))) => buf,
        };
        run.rec.borrow_mut().bytes_in(buf.len(), now);
        let mut close = false;
        let mut completed = 0;
        let result = conn.exchange.borrow_mut().receive(&buf, &mut |reply| {
            completed += 1;
            complete(conn, run, reply, now, &mut close)
        });
        drop(buf);
        run.progress(completed);
        conn.window.borrow_mut().wake_writer();
        if let Err(kind) = result {
            run.rec.borrow_mut().error(kind);
            return;
        }
        if close || (run.budget_spent() && conn.window.borrow().in_flight.is_empty()) {
            return;
        }
    }
}

/// Completes the oldest request in flight with `reply`, received at `now`.
fn complete<E>(conn: &Connection<E>, run: &CoreRun, reply: Reply, now: Instant, close: &mut bool) {
    let Some(request) = conn.window.borrow_mut().in_flight.pop_front() else {
        // More responses than requests: the server answered something never asked.
        run.rec.borrow_mut().error("unsolicited_response");
        *close = true;
        return;
    };
    let mut rec = run.rec.borrow_mut();
    rec.complete(request.start, now);
    match reply.verdict {
        Verdict::Ok => {}
        Verdict::Wrong(Wrong::Status(code)) => rec.error(&format!("status_{code}")),
        Verdict::Wrong(Wrong::BodyLength) => rec.error("body_length"),
    }
    *close |= reply.close;
}
