//! The `tcp-echo` workload: fixed-size messages that the server must send back byte for byte.
//!
//! Every connection sends one endless, deterministic byte stream cut into messages, and checks
//! that what comes back is the same stream: a lost, duplicated, reordered or corrupted byte is
//! caught (`echo_mismatch`) and fails the connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::run::{Lane, Workload};
use crate::stream::{Exchange, Reply, Verdict, drive};

/// Length of the repeating pattern the stream is made of; prime, so it never lines up with
/// message sizes.
const PERIOD: usize = 4093;

/// The `tcp-echo` workload, ready to run.
#[derive(Debug)]
pub struct TcpEcho {
    addr: SocketAddr,
    target: String,
    size: usize,
    /// The pattern, repeated far enough that any `pipeline` messages from any offset are one
    /// slice of it.
    stream: Bytes,
}

impl TcpEcho {
    /// Echo of `size`-byte messages, up to `pipeline` in flight per connection, to `target`.
    pub fn new(target: &str, size: usize, pipeline: usize) -> Result<TcpEcho, String> {
        if size == 0 {
            return Err("--size must be at least 1".into());
        }
        let addr = crate::run::resolve(target, target)?;
        let span = PERIOD + size * pipeline.max(1);
        let stream = (0..span).map(pattern).collect::<Vec<u8>>().into();
        Ok(TcpEcho {
            addr,
            target: target.to_owned(),
            size,
            stream,
        })
    }
}

/// Byte `i` of the stream (pseudo-random, so shifted or swapped bytes do not match).
fn pattern(i: usize) -> u8 {
    let x = (i % PERIOD) as u32;
    (x.wrapping_mul(2_654_435_761) >> 24) as u8
}

impl Workload for TcpEcho {
    fn kind(&self) -> &'static str {
        "tcp-echo"
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    fn connection(self: Arc<Self>, lane: Lane) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let addr = self.addr;
            drive(lane, addr, None, || EchoExchange {
                echo: Arc::clone(&self),
                sent: 0,
                received: 0,
            })
            .await
        })
    }
}

struct EchoExchange {
    echo: Arc<TcpEcho>,
    /// Stream offset of the next byte to send.
    sent: usize,
    /// Stream offset of the next byte expected back.
    received: usize,
}

impl Exchange for EchoExchange {
    fn requests(&mut self, k: usize) -> Bytes {
        let from = self.sent % PERIOD;
        self.sent += k * self.echo.size;
        self.echo.stream.slice(from..from + k * self.echo.size)
    }

    fn receive(
        &mut self,
        mut input: &[u8],
        reply: &mut dyn FnMut(Reply),
    ) -> Result<(), &'static str> {
        if self.received + input.len() > self.sent {
            return Err("echo_mismatch");
        }
        let size = self.echo.size;
        while !input.is_empty() {
            // Up to the end of the current message or of the pattern, whichever comes first.
            let offset = self.received % PERIOD;
            let in_message = size - self.received % size;
            let n = input.len().min(in_message).min(PERIOD - offset);
            if input[..n] != self.echo.stream[offset..offset + n] {
                return Err("echo_mismatch");
            }
            input = &input[n..];
            self.received += n;
            if self.received.is_multiple_of(size) {
                reply(Reply {
                    verdict: Verdict::Ok,
                    close: false,
                });
            }
        }
        Ok(())
    }

    fn closed(&mut self, _reply: &mut dyn FnMut(Reply)) -> Result<(), &'static str> {
        if !self.received.is_multiple_of(self.echo.size) {
            return Err("echo_truncated");
        }
        Ok(())
    }
}
