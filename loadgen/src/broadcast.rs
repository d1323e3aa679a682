//! The `ws-broadcast` workload: every connection is a WebSocket member of one room (a server
//! that delivers each text message to every member, the sender included: the `chat`
//! example, for one); the first `publishers` of them also publish, on a fixed schedule, text
//! messages that carry their intended send time. Each member records, for every message it
//! receives, the time from that intended send time to its arrival: the latency of one
//! publish as each client sees it, coordinated omission corrected (a stalled server delays
//! the publishes behind the stall and that wait is counted).
//!
//! A member also checks each publisher's order: a message that comes before one it already
//! had, or after a gap, is counted (`broadcast_reordered`, `broadcast_gap`).

use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coring_protocols::websocket::{self as ws, Message};

use crate::run::{Lane, Schedule, Workload};

/// The `ws-broadcast` workload, ready to run.
#[derive(Debug)]
pub struct WsBroadcast {
    url: String,
    size: usize,
    publishers: usize,
    /// Publishes per second, all publishers together.
    rate: f64,
    /// The instant message times count from (one process: every core shares it).
    epoch: Instant,
}

/// The shortest message: `P<lane>:<seq>:<nanos>` fits in it.
const MIN_SIZE: usize = 48;

impl WsBroadcast {
    /// Members of the room at `url` (`ws://host:port/path`); `publishers` of them publish
    /// `rate` messages a second in all, each `size` bytes (at least 48).
    pub fn new(url: &str, size: usize, publishers: usize, rate: f64) -> Result<Self, String> {
        coring_protocols::client::Url::parse_ws(url)?;
        if size < MIN_SIZE {
            return Err(format!(
                "-s: a broadcast message takes at least {MIN_SIZE} bytes"
            ));
        }
        if publishers == 0 || !(rate > 0.0 && rate.is_finite()) {
            return Err("--publishers and --rate must be positive".into());
        }
        Ok(WsBroadcast {
            url: url.to_owned(),
            size,
            publishers,
            rate,
            epoch: Instant::now(),
        })
    }

    /// The text of publisher `lane`'s message `seq`, intended for `at`.
    fn message(&self, lane: usize, seq: u64, at: Instant) -> Message {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        let mut text = format!("P{lane}:{seq}:{nanos}:").into_bytes();
        text.resize(self.size, b'.');
        Message::Text(Bytes::from(text))
    }
}

/// `(publisher, seq, intended send time)` of a message.
fn parse(epoch: Instant, text: &[u8]) -> Option<(usize, u64, Instant)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut parts = text.strip_prefix('P')?.split(':');
    let lane = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let nanos: u64 = parts.next()?.parse().ok()?;
    Some((lane, seq, epoch + Duration::from_nanos(nanos)))
}

impl Workload for WsBroadcast {
    fn kind(&self) -> &'static str {
        "ws-broadcast"
    }

    fn target(&self) -> String {
        self.url.clone()
    }

    fn connection(self: Arc<Self>, lane: Lane) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let run = Rc::clone(&lane.run);
            let deadline = run.send_until + run.options.timeout;
            let socket =
                match coring::time::timeout(run.options.timeout, ws::connect(&self.url)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(_)) => return run.rec.borrow_mut().error("ws_connect"),
                    Err(_) => return run.rec.borrow_mut().error("timeout"),
                };
            let (mut reader, writer) = socket.split();
            if lane.index < self.publishers {
                let (me, index) = (Arc::clone(&self), lane.index);
                let run = Rc::clone(&run);
                let schedule = Schedule::new(
                    Instant::now() + Duration::from_secs_f64(index as f64 / self.rate),
                    self.rate / self.publishers as f64,
                );
                coring::spawn_local(async move {
                    let mut seq = 0;
                    loop {
                        let at = schedule.pop();
                        if run.stop_sending(at) {
                            return;
                        }
                        coring::time::sleep_until(at).await;
                        if writer.send(&me.message(index, seq, at)).await.is_err() {
                            run.rec.borrow_mut().error("ws_closed");
                            return;
                        }
                        run.rec.borrow_mut().bytes_out(me.size, Instant::now());
                        seq += 1;
                    }
                });
            }
            // Each publisher's last seq seen here.
            let mut last: HashMap<usize, u64> = HashMap::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let message = match coring::time::timeout(left, reader.recv()).await {
                    Err(_) => return,
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        if Instant::now() < run.send_until {
                            run.rec.borrow_mut().error("ws_closed");
                        }
                        return;
                    }
                };
                let now = Instant::now();
                let Some((publisher, seq, sent)) = parse(self.epoch, message.bytes()) else {
                    run.rec.borrow_mut().error("bad_message");
                    continue;
                };
                let mut rec = run.rec.borrow_mut();
                match last.insert(publisher, seq) {
                    Some(prev) if seq <= prev => rec.error("broadcast_reordered"),
                    Some(prev) if seq > prev + 1 => rec.error("broadcast_gap"),
                    _ => {}
                }
                rec.bytes_in(message.bytes().len(), now);
                rec.complete_sent(sent, now);
                drop(rec);
                run.progress(1);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_publisher_seq_and_time() {
        let b = WsBroadcast::new("ws://127.0.0.1:1/r", 64, 1, 10.0).unwrap();
        let at = b.epoch + Duration::from_micros(1234);
        let m = b.message(3, 7, at);
        assert_eq!(m.bytes().len(), 64);
        assert_eq!(parse(b.epoch, m.bytes()), Some((3, 7, at)));
        assert_eq!(parse(b.epoch, b"hello"), None);
        assert!(WsBroadcast::new("ws://h:1/", 8, 1, 1.0).is_err());
        assert!(WsBroadcast::new("http://h:1/", 64, 1, 1.0).is_err());
    }
}
