//! permessage-deflate (RFC 7692): the server's choice among the client's offers, and the
//! compressor and decompressor a connection keeps once it is agreed.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::WsError;

/// What a server is willing to do when a client offers permessage-deflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Start every message we send from an empty window (`server_no_context_takeover`): less
    /// memory per connection and messages that can be compressed once for many receivers,
    /// at some cost in ratio.
    pub server_no_context_takeover: bool,
    /// Ask the client to do the same for its messages (`client_no_context_takeover`).
    pub client_no_context_takeover: bool,
    /// Largest window we compress with (9 to 15; a client's smaller limit wins).
    pub server_max_window_bits: u8,
    /// Messages shorter than this go out uncompressed.
    pub min_compress_bytes: usize,
    /// zlib compression level (0 to 9).
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            min_compress_bytes: 64,
            level: 1,
        }
    }
}

/// What both sides agreed, from one side's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// We reset our compressor after each message.
    pub our_no_context_takeover: bool,
    /// The peer resets its compressor after each message (so we may reset our decompressor).
    pub peer_no_context_takeover: bool,
    /// Our compressor's window.
    pub our_window_bits: u8,
    /// Messages shorter than this go out uncompressed.
    pub min_compress_bytes: usize,
    /// zlib level.
    pub level: u32,
}

/// One offer's parameters, as parsed.
#[derive(Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: bool,
    /// The value given with `client_max_window_bits`, if any.
    client_window_bits: Option<u8>,
}

/// Parses one `permessage-deflate; param; param=value` offer; `None` if it is another
/// extension or breaks RFC 7692's rules (unknown or repeated parameters, bad values).
fn parse_offer(offer: &str) -> Option<Offer> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut o = Offer::default();
    let mut seen = [false; 4];
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (part, None),
        };
        let bits = |v: Option<&str>| -> Option<u8> {
            let v = v?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
        };
        let slot = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                o.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" if value.is_none() => {
                o.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                o.server_max_window_bits = Some(bits(value)?);
                2
            }
            "client_max_window_bits" => {
                if value.is_some() {
                    o.client_window_bits = Some(bits(value)?);
                }
                o.client_max_window_bits = true;
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
    }
    Some(o)
}

/// The server's choice: the first of the client's offers it can accept, what was agreed, and
/// the `Sec-WebSocket-Extensions` value that says so.
pub fn negotiate(offers: &[String], config: &DeflateConfig) -> Option<(Agreed, String)> {
    offers.iter().find_map(|offer| {
        let o = parse_offer(offer)?;
        let server_no_context_takeover =
            o.server_no_context_takeover || config.server_no_context_takeover;
        // Raw deflate's smallest window is 2^9: a client that can keep only 2^8 is declined
        // (its next offer may do).
        let limit = o.server_max_window_bits.unwrap_or(15);
        if limit < 9 {
            return None;
        }
        let our_window_bits = config.server_max_window_bits.clamp(9, 15).min(limit);
        let mut answer = String::from("permessage-deflate");
        if server_no_context_takeover {
            answer.push_str("; server_no_context_takeover");
        }
        if config.client_no_context_takeover || o.client_no_context_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if o.server_max_window_bits.is_some() || our_window_bits < 15 {
            answer.push_str(&format!("; server_max_window_bits={our_window_bits}"));
        }
        Some((
            Agreed {
                our_no_context_takeover: server_no_context_takeover,
                peer_no_context_takeover: config.client_no_context_takeover
                    || o.client_no_context_takeover,
                our_window_bits,
                min_compress_bytes: config.min_compress_bytes,
                level: config.level.min(9),
            },
            answer,
        ))
    })
}

/// A client's offer of permessage-deflate. From a client's side `client_no_context_takeover`
/// says we reset our compressor after each message, `server_no_context_takeover` asks the
/// server to reset its own; any window the server allows is taken.
pub fn client_offer(config: &DeflateConfig) -> String {
    let mut offer = String::from("permessage-deflate; client_max_window_bits");
    if config.server_no_context_takeover {
        offer.push_str("; server_no_context_takeover");
    }
    if config.client_no_context_takeover {
        offer.push_str("; client_no_context_takeover");
    }
    offer
}

/// What a server's answer to [`client_offer`] agreed, from the client's side; `None` if the
/// answer breaks RFC 7692's rules or asks for what raw deflate cannot do (an 8-bit window).
pub fn accept_answer(answer: &str, config: &DeflateConfig) -> Option<Agreed> {
    let o = parse_offer(answer)?;
    if config.server_no_context_takeover && !o.server_no_context_takeover {
        // We asked the server to reset and it did not agree: RFC 7692 section 7.1.1.1.
        return None;
    }
    let our_window_bits = match o.client_window_bits {
        Some(bits) if bits < 9 => return None,
        Some(bits) => bits,
        None => 15,
    };
    Some(Agreed {
        our_no_context_takeover: o.client_no_context_takeover || config.client_no_context_takeover,
        peer_no_context_takeover: o.server_no_context_takeover,
        our_window_bits,
        min_compress_bytes: config.min_compress_bytes,
        level: config.level.min(9),
    })
}

/// The compressor and decompressor of a connection that agreed permessage-deflate.
pub(crate) struct Deflate {
    agreed: Agreed,
    compress: Compress,
    decompress: Decompress,
    /// The peer's stream for this message ended (a final block): nothing more may follow.
    ended: bool,
    /// Where a message is compressed before it is framed (kept between messages).
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("agreed", &self.agreed)
            .finish()
    }
}

/// The bytes a sync flush ends with, which the sender drops and the receiver puts back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

impl Deflate {
    pub(crate) fn new(agreed: Agreed) -> Deflate {
        Deflate {
            compress: Compress::new_with_window_bits(
                Compression::new(agreed.level),
                false,
                agreed.our_window_bits,
            ),
            // The peer's window is at most 2^15: a 15-bit window reads every stream.
            decompress: Decompress::new_with_window_bits(false, 15),
            ended: false,
            scratch: Vec::new(),
            agreed,
        }
    }

    /// Compresses one whole message into the compressor's own buffer, and returns it.
    pub(crate) fn compressed(&mut self, message: &[u8]) -> &[u8] {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.compress(message, &mut scratch);
        self.scratch = scratch;
        &self.scratch
    }

    /// What was agreed.
    pub(crate) fn agreed(&self) -> &Agreed {
        &self.agreed
    }

    /// Whether a message of `len` bytes is worth compressing.
    pub(crate) fn worth_it(&self, len: usize) -> bool {
        len >= self.agreed.min_compress_bytes
    }

    /// Compresses one whole message into `out` (appended), without the sync flush's tail.
    pub(crate) fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let start_in = self.compress.total_in();
        loop {
            out.reserve(message.len() / 2 + 64);
            let consumed = (self.compress.total_in() - start_in) as usize;
            let before = out.len();
            // Raw deflate into a Vec cannot fail: the stream is ours and never finished.
            let _ = self
                .compress
                .compress_vec(&message[consumed..], out, FlushCompress::Sync);
            let consumed = (self.compress.total_in() - start_in) as usize;
            // Done when all input is in and the flush left room (nothing more pending), or a
            // further flush had nothing to add.
            if consumed == message.len() && (out.len() < out.capacity() || out.len() == before) {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.agreed.our_no_context_takeover {
            self.compress.reset();
        }
    }

    /// Inflates one piece of a compressed message into `out`; `last`: the message ends with
    /// this piece. Fails past `limit` bytes of output (a bomb is refused, not buffered) or on
    /// data that is not deflate.
    pub(crate) fn decompress(
        &mut self,
        piece: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        limit: u64,
    ) -> Result<(), WsError> {
        self.inflate(piece, out, limit)?;
        if last {
            if !self.ended {
                self.inflate(&TAIL, out, limit)?;
            }
            if self.ended || self.agreed.peer_no_context_takeover {
                self.decompress.reset(false);
            }
            self.ended = false;
        }
        Ok(())
    }

    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>, limit: u64) -> Result<(), WsError> {
        if input.is_empty() {
            return Ok(());
        }
        if self.ended {
            return Err(WsError::Protocol("data after the end of a deflate stream"));
        }
        let start_in = self.decompress.total_in();
        let mut progress = 0;
        loop {
            let consumed = (self.decompress.total_in() - start_in) as usize;
            // Room for a few times the input, never much past the limit.
            let room = ((input.len() - consumed) * 4).clamp(4096, 256 * 1024);
            let room = room.min((limit.saturating_sub(out.len() as u64) + 1) as usize);
            out.reserve(room.max(1));
            let before = out.len();
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|_| WsError::Protocol("compressed data is not deflate"))?;
            if out.len() as u64 > limit {
                return Err(WsError::TooBig("decompressed message"));
            }
            let consumed = (self.decompress.total_in() - start_in) as usize;
            let full = out.len() == out.capacity();
            if status == Status::StreamEnd {
                // A final block ends the stream: legal, but nothing may follow it in this
                // message (however its frames were cut).
                self.ended = true;
                if consumed < input.len() {
                    return Err(WsError::Protocol("data after the end of a deflate stream"));
                }
                return Ok(());
            }
            if consumed == input.len() && !full {
                return Ok(());
            }
            if out.len() == before && consumed == progress {
                if consumed == input.len() {
                    return Ok(());
                }
                return Err(WsError::Protocol("compressed data is not deflate"));
            }
            progress = consumed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(offer: &str) -> Option<(Agreed, String)> {
        negotiate(&[offer.to_string()], &DeflateConfig::default())
    }

    #[test]
    fn offers_are_accepted_or_declined_by_the_rules() {
        let (a, answer) = agreed("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(answer, "permessage-deflate");
        assert_eq!(a.our_window_bits, 15);
        let (a, answer) =
            agreed("permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
                .unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
        );
        assert!(a.our_no_context_takeover);
        assert_eq!(a.our_window_bits, 10);
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(agreed(bad), None, "{bad}");
        }
        // The first acceptable offer wins.
        let offers = [
            "permessage-deflate; server_max_window_bits=8".to_string(),
            "permessage-deflate".to_string(),
        ];
        assert!(negotiate(&offers, &DeflateConfig::default()).is_some());
    }

    #[test]
    fn a_client_offer_and_the_servers_answer_agree_on_both_sides() {
        for (client, server) in [
            (DeflateConfig::default(), DeflateConfig::default()),
            (
                DeflateConfig {
                    server_no_context_takeover: true,
                    ..DeflateConfig::default()
                },
                DeflateConfig {
                    client_no_context_takeover: true,
                    server_max_window_bits: 10,
                    ..DeflateConfig::default()
                },
            ),
        ] {
            let offer = client_offer(&client);
            let (at_server, answer) = negotiate(&[offer], &server).unwrap();
            let at_client = accept_answer(&answer, &client).unwrap();
            assert_eq!(
                at_client.our_no_context_takeover,
                at_server.peer_no_context_takeover
            );
            assert_eq!(
                at_client.peer_no_context_takeover,
                at_server.our_no_context_takeover
            );
        }
        // Answers a client must refuse: an 8-bit window for us, an unknown parameter, and
        // no reset when we asked for one.
        let d = DeflateConfig::default();
        assert_eq!(
            accept_answer("permessage-deflate; client_max_window_bits=8", &d),
            None
        );
        assert_eq!(accept_answer("permessage-deflate; x=1", &d), None);
        let asked = DeflateConfig {
            server_no_context_takeover: true,
            ..d
        };
        assert_eq!(accept_answer("permessage-deflate", &asked), None);
        assert_eq!(
            accept_answer("permessage-deflate; client_max_window_bits=12", &d)
                .map(|a| a.our_window_bits),
            Some(12)
        );
    }

    #[test]
    fn messages_round_trip_with_and_without_context_takeover() {
        for no_takeover in [false, true] {
            let agreed = Agreed {
                our_no_context_takeover: no_takeover,
                peer_no_context_takeover: no_takeover,
                our_window_bits: 11,
                min_compress_bytes: 0,
                level: 6,
            };
            let (mut tx, mut rx) = (Deflate::new(agreed), Deflate::new(agreed));
            for round in 0..5 {
                let message: Vec<u8> = format!("hello hello hello {round} ").repeat(200).into();
                let mut wire = Vec::new();
                tx.compress(&message, &mut wire);
                assert!(wire.len() < message.len() / 4);
                // Inflated in three pieces.
                let mut back = Vec::new();
                let third = wire.len() / 3;
                rx.decompress(&wire[..third], false, &mut back, 1 << 20)
                    .unwrap();
                rx.decompress(&wire[third..2 * third], false, &mut back, 1 << 20)
                    .unwrap();
                rx.decompress(&wire[2 * third..], true, &mut back, 1 << 20)
                    .unwrap();
                assert_eq!(back, message);
            }
        }
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit() {
        let agreed = Agreed {
            our_no_context_takeover: true,
            peer_no_context_takeover: true,
            our_window_bits: 15,
            min_compress_bytes: 0,
            level: 9,
        };
        let mut tx = Deflate::new(agreed);
        let mut wire = Vec::new();
        tx.compress(&vec![0u8; 8 << 20], &mut wire);
        assert!(wire.len() < 64 << 10);
        let mut rx = Deflate::new(agreed);
        let mut out = Vec::new();
        assert_eq!(
            rx.decompress(&wire, true, &mut out, 1 << 20),
            Err(WsError::TooBig("decompressed message"))
        );
        assert!(
            out.capacity() < 2 << 20,
            "nothing much past the limit was buffered"
        );
    }
}
