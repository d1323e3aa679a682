//! The `ws` workload: WebSocket echo. Each connection opens with the handshake (its `101`
//! checked, as a browser would), then keeps `pipeline` messages in flight; every message that
//! comes back must be one whole unfragmented frame of the kind and size sent, byte for byte.
//!
//! Client frames are masked as RFC 6455 requires; the mask is drawn once per run, so the
//! load generator frames nothing per message (a server cannot tell).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use coring_protocols::client::Url;
use coring_protocols::http1::Status;
use coring_protocols::ws::frame::{Opcode, apply_mask, decode_header, encode_header};
use coring_protocols::ws::handshake::{check_answer, client_request, random_key};

use crate::run::{Lane, Workload};
use crate::stream::{Exchange, Reply, Verdict, drive};

/// The `ws` workload, ready to run.
#[derive(Debug)]
pub struct WsEcho {
    addr: SocketAddr,
    url: String,
    host: String,
    path: String,
    text: bool,
    /// What each message carries.
    payload: Bytes,
    /// `pipeline` copies of the masked frame, back to back.
    frames: Bytes,
    frame_len: usize,
}

impl WsEcho {
    /// Echo of `size`-byte messages (text when `text`, else binary), up to `pipeline` in flight
    /// per connection, to `url` (`ws://host:port/path`).
    pub fn new(url: &str, size: usize, text: bool, pipeline: usize) -> Result<WsEcho, String> {
        let parsed = Url::parse_ws(url)?;
        let authority = parsed.authority();
        let addr = crate::run::resolve(&authority, url)?;
        // Printable bytes for text, a spread of every value for binary.
        let payload: Bytes = (0..size)
            .map(|i| {
                if text {
                    b'a' + (i % 26) as u8
                } else {
                    (i.wrapping_mul(2_654_435_761) >> 13) as u8
                }
            })
            .collect::<Vec<u8>>()
            .into();
        let key = mask_key();
        let opcode = if text { Opcode::Text } else { Opcode::Binary };
        let mut frame = Vec::with_capacity(size + 14);
        encode_header(&mut frame, true, false, opcode, Some(key), size as u64);
        let start = frame.len();
        frame.extend_from_slice(&payload);
        apply_mask(&mut frame[start..], key, 0);
        let frame_len = frame.len();
        let frames = frame.repeat(pipeline.max(1)).into();
        Ok(WsEcho {
            addr,
            url: url.to_owned(),
            host: authority,
            path: parsed.target,
            text,
            payload,
            frames,
            frame_len,
        })
    }
}

/// A mask key a server cannot predict.
fn mask_key() -> [u8; 4] {
    let key = random_key();
    [key[0], key[1], key[2], key[3]]
}

impl Workload for WsEcho {
    fn kind(&self) -> &'static str {
        "ws"
    }

    fn target(&self) -> String {
        self.url.clone()
    }

    fn connection(self: Arc<Self>, lane: Lane) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let addr = self.addr;
            drive(lane, addr, None, || WsExchange {
                echo: Arc::clone(&self),
                key: String::new(),
                head: Vec::new(),
                frame: None,
            })
            .await
        })
    }
}

/// The frame whose payload is arriving.
#[derive(Clone, Copy, Debug)]
struct Incoming {
    /// Payload bytes still to come.
    remaining: usize,
    /// Payload bytes seen so far (where the comparison stands).
    at: usize,
    /// A message we sent coming back (otherwise a ping or pong, skipped).
    echo: bool,
}

struct WsExchange {
    echo: Arc<WsEcho>,
    /// The handshake's key, to check the accept against.
    key: String,
    /// Header bytes of a frame cut between reads.
    head: Vec<u8>,
    frame: Option<Incoming>,
}

impl WsExchange {
    /// Starts the frame whose header begins `input` (after any saved bytes); how many bytes of
    /// `input` the header took, or `None` if it is not whole yet (the bytes are kept).
    fn header(&mut self, input: &[u8]) -> Result<Option<usize>, &'static str> {
        // A header cut between reads is completed in `head` (a header is at most 14 bytes).
        let saved = self.head.len();
        if saved > 0 {
            self.head.extend_from_slice(&input[..input.len().min(14)]);
        }
        let buf: &[u8] = if saved > 0 { &self.head } else { input };
        let (header, len) = match decode_header(buf).map_err(|_| "ws_frame")? {
            Status::Complete(h) => h,
            Status::Partial => {
                if saved == 0 {
                    self.head.extend_from_slice(input);
                }
                return Ok(None);
            }
        };
        self.head.clear();
        let used = len - saved;
        let expected = if self.echo.text {
            Opcode::Text
        } else {
            Opcode::Binary
        };
        let echo = match header.opcode {
            Opcode::Ping | Opcode::Pong => false,
            Opcode::Close => return Err("ws_closed"),
            op if op == expected => true,
            _ => return Err("ws_frame"),
        };
        if header.mask.is_some() || header.rsv1 || header.rsv23 || (echo && !header.fin) {
            return Err("ws_frame");
        }
        if echo && header.len != self.echo.payload.len() as u64 {
            return Err("echo_mismatch");
        }
        self.frame = Some(Incoming {
            remaining: header.len as usize,
            at: 0,
            echo,
        });
        Ok(Some(used))
    }
}

impl Exchange for WsExchange {
    fn requests(&mut self, k: usize) -> Bytes {
        self.echo.frames.slice(..k * self.echo.frame_len)
    }

    fn receive(
        &mut self,
        mut input: &[u8],
        reply: &mut dyn FnMut(Reply),
    ) -> Result<(), &'static str> {
        loop {
            let Some(mut frame) = self.frame else {
                if input.is_empty() {
                    return Ok(());
                }
                match self.header(input)? {
                    Some(used) => input = &input[used..],
                    None => return Ok(()),
                }
                continue;
            };
            let n = input.len().min(frame.remaining);
            if frame.echo && input[..n] != self.echo.payload[frame.at..frame.at + n] {
                return Err("echo_mismatch");
            }
            input = &input[n..];
            frame.at += n;
            frame.remaining -= n;
            if frame.remaining > 0 {
                self.frame = Some(frame);
                return Ok(());
            }
            self.frame = None;
            if frame.echo {
                reply(Reply {
                    verdict: Verdict::Ok,
                    close: false,
                });
            }
        }
    }

    fn closed(&mut self, _reply: &mut dyn FnMut(Reply)) -> Result<(), &'static str> {
        if self.frame.is_some() || !self.head.is_empty() {
            return Err("echo_truncated");
        }
        Ok(())
    }

    fn opening(&mut self) -> Option<Bytes> {
        let (request, key) =
            client_request(&self.echo.host, &self.echo.path, random_key(), &[], None);
        self.key = key;
        Some(request.into())
    }

    fn opened(&mut self, input: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(input) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("handshake"),
        };
        let status = response.code.unwrap_or(0);
        let fields = response.headers.iter().map(|h| (h.name, h.value));
        check_answer(status, fields, &self.key, &[], None).map_err(|_| "handshake")?;
        Ok(Some(len))
    }
}
