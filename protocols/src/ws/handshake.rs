//! The opening handshake (RFC 6455 section 4): the server checks an upgrade request and
//! answers `101 Switching Protocols`; the client builds the request and checks the answer.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::deflate::{Agreed, DeflateConfig};
use crate::http1::{Request, Response, Version};

/// The GUID the accept key is derived with (RFC 6455 section 1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request or answer is refused. A server answers the request with
/// [`HandshakeError::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Not a WebSocket upgrade at all (no `Upgrade: websocket` / `Connection: upgrade`).
    #[error("not a websocket upgrade request")]
    NotUpgrade,
    /// An upgrade, but not one we can accept.
    #[error("bad websocket handshake: {0}")]
    Bad(&'static str),
    /// A `Sec-WebSocket-Version` other than 13 (answered 426 with the version we speak).
    #[error("unsupported websocket version")]
    Version,
}

impl HandshakeError {
    /// The status to answer the request with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::NotUpgrade => 426,
            HandshakeError::Bad(_) => 400,
            HandshakeError::Version => 426,
        }
    }

    /// The whole answer to a refused request.
    pub fn response(&self) -> Response {
        let response = Response::new(self.status())
            .header("Content-Type", "text/plain")
            .body(self.to_string());
        match self {
            HandshakeError::NotUpgrade | HandshakeError::Version => response
                .header("Upgrade", "websocket")
                .header("Sec-WebSocket-Version", "13"),
            HandshakeError::Bad(_) => response,
        }
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A checked upgrade request: answer it with [`Upgrade::response`], then speak WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    accept: String,
    /// The subprotocols the client offered, in its order of preference.
    pub protocols: Vec<String>,
    /// The extensions the client offered, as sent (`permessage-deflate; client_max_window_bits`).
    pub extensions: Vec<String>,
}

impl Upgrade {
    /// Checks `req` as an upgrade to WebSocket (RFC 6455 section 4.2.1): a GET over
    /// HTTP/1.1 with `Upgrade: websocket`, `Connection: upgrade`, version 13 and a key that is
    /// 16 bytes in base64.
    pub fn from_request(req: &Request) -> Result<Upgrade, HandshakeError> {
        let has_token = |name: &str, token: &str| {
            req.headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        };
        if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
            return Err(HandshakeError::NotUpgrade);
        }
        if req.method() != "GET" {
            return Err(HandshakeError::Bad("the upgrade must be a GET"));
        }
        if req.version() != Version::Http11 {
            return Err(HandshakeError::Bad("the upgrade needs HTTP/1.1"));
        }
        if !req.body().is_empty() {
            return Err(HandshakeError::Bad("the upgrade request has a body"));
        }
        match req.header("sec-websocket-version") {
            Some(v) if v.trim_ascii() == b"13" => {}
            _ => return Err(HandshakeError::Version),
        }
        let key = req
            .header("sec-websocket-key")
            .map(<[u8]>::trim_ascii)
            .ok_or(HandshakeError::Bad("no Sec-WebSocket-Key"))?;
        match base64::engine::general_purpose::STANDARD.decode(key) {
            Ok(raw) if raw.len() == 16 => {}
            _ => {
                return Err(HandshakeError::Bad(
                    "Sec-WebSocket-Key is not 16 bytes in base64",
                ));
            }
        }
        let list = |name: &str| -> Vec<String> {
            req.headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.split(|&b| b == b','))
                .map(|t| String::from_utf8_lossy(t.trim_ascii()).into_owned())
                .filter(|t| !t.is_empty())
                .collect()
        };
        Ok(Upgrade {
            accept: accept_key(key),
            protocols: list("sec-websocket-protocol"),
            extensions: list("sec-websocket-extensions"),
        })
    }

    /// The `101 Switching Protocols` answer, choosing `protocol` (which must be one the client
    /// offered; `None` chooses none). The encoder adds `Connection: Upgrade` to every 101.
    pub fn response(&self, protocol: Option<&str>) -> Response {
        self.response_with(protocol, None)
    }

    /// [`Upgrade::response`] that also names the extensions agreed
    /// (`Sec-WebSocket-Extensions`, from [`deflate::negotiate`](super::deflate::negotiate)).
    pub fn response_with(&self, protocol: Option<&str>, extensions: Option<String>) -> Response {
        let mut response = Response::new(101)
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Accept", self.accept.clone());
        if let Some(p) = protocol.filter(|p| self.protocols.iter().any(|o| o == p)) {
            response = response.header("Sec-WebSocket-Protocol", p.to_owned());
        }
        if let Some(e) = extensions {
            response = response.header("Sec-WebSocket-Extensions", e);
        }
        response
    }
}

/// 16 bytes from the OS's random source (std's hasher keys are drawn from it): a client's
/// `Sec-WebSocket-Key`, or masking keys a peer cannot predict.
pub fn random_key() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0; 16];
    for half in key.chunks_exact_mut(8) {
        let word = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        half.copy_from_slice(&word.to_le_bytes());
    }
    key
}

/// A client's upgrade request for `path` on `host`, with `key` (16 random bytes), the
/// subprotocols it offers and its `Sec-WebSocket-Extensions` offer (see
/// [`deflate::client_offer`](super::deflate::client_offer)); returns the request bytes and
/// the key as sent.
pub fn client_request(
    host: &str,
    path: &str,
    key: [u8; 16],
    protocols: &[&str],
    extensions: Option<&str>,
) -> (Vec<u8>, String) {
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        req.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    if let Some(e) = extensions {
        req.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    req.push_str("\r\n");
    (req.into_bytes(), key)
}

/// What the server agreed to in its `101`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The subprotocol it chose.
    pub protocol: Option<String>,
    /// permessage-deflate, if we offered it and the server took it.
    pub deflate: Option<Agreed>,
}

/// Checks a server's answer to [`client_request`] sent with `key`: `101`, the upgrade
/// headers, the right accept key, a subprotocol only from those offered and an extension only
/// if offered (`deflate`: the configuration the offer was made from).
pub fn check_answer<'a>(
    status: u16,
    headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    key: &str,
    offered: &[&str],
    deflate: Option<&DeflateConfig>,
) -> Result<Answer, HandshakeError> {
    if status != 101 {
        return Err(HandshakeError::Bad("the server did not switch protocols"));
    }
    let value = |name: &str| {
        headers
            .clone()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    if !value("upgrade").is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket")) {
        return Err(HandshakeError::Bad("the answer has no Upgrade: websocket"));
    }
    let upgrade_token = value("connection").is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !upgrade_token {
        return Err(HandshakeError::Bad("the answer has no Connection: upgrade"));
    }
    if value("sec-websocket-accept").map(<[u8]>::trim_ascii)
        != Some(accept_key(key.as_bytes()).as_bytes())
    {
        return Err(HandshakeError::Bad("wrong Sec-WebSocket-Accept"));
    }
    let deflate = match (value("sec-websocket-extensions"), deflate) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(HandshakeError::Bad(
                "the server chose an extension we did not offer",
            ));
        }
        (Some(answer), Some(config)) => {
            let agreed = std::str::from_utf8(answer)
                .ok()
                .and_then(|a| super::deflate::accept_answer(a.trim(), config));
            match agreed {
                Some(a) => Some(a),
                None => {
                    return Err(HandshakeError::Bad(
                        "the server's permessage-deflate answer is not one we can accept",
                    ));
                }
            }
        }
    };
    let protocol = match value("sec-websocket-protocol") {
        None => None,
        Some(p) => {
            let p = String::from_utf8_lossy(p.trim_ascii()).into_owned();
            if !offered.contains(&p.as_str()) {
                return Err(HandshakeError::Bad(
                    "the server chose a subprotocol we did not offer",
                ));
            }
            Some(p)
        }
    };
    Ok(Answer { protocol, deflate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{ServerConfig, ServerConn};
    use std::rc::Rc;
    use std::time::Instant;

    fn request(bytes: &[u8]) -> Request {
        let mut conn = ServerConn::new(Rc::new(ServerConfig::default()), Instant::now());
        conn.handle_input(bytes, Instant::now());
        conn.poll_request().expect("a request").expect("parsed")
    }

    #[test]
    fn the_rfc_example_key_gets_its_accept() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn a_browser_upgrade_is_accepted_and_answered() {
        let req = request(
            b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        );
        let up = Upgrade::from_request(&req).unwrap();
        assert_eq!(up.protocols, ["chat", "superchat"]);
        assert_eq!(
            up.extensions,
            ["permessage-deflate; client_max_window_bits"]
        );
        let resp = up.response(Some("superchat"));
        assert_eq!(resp.status(), 101);
        let headers: Vec<_> = resp.headers().collect();
        assert!(headers.contains(&("Sec-WebSocket-Accept", &b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])));
        assert!(headers.contains(&("Sec-WebSocket-Protocol", &b"superchat"[..])));
        // A protocol the client never offered is not chosen.
        assert!(
            up.response(Some("other"))
                .headers()
                .all(|(n, _)| n != "Sec-WebSocket-Protocol")
        );
    }

    #[test]
    fn bad_upgrades_are_refused_with_their_status() {
        let base = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let cases = [
            ("GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_string(), 426),
            (
                format!(
                    "POST / HTTP/1.1\r\n{base}{key}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
                ),
                400,
            ),
            (
                format!("GET / HTTP/1.1\r\n{base}{key}Sec-WebSocket-Version: 8\r\n\r\n"),
                426,
            ),
            (
                format!("GET / HTTP/1.1\r\n{base}Sec-WebSocket-Version: 13\r\n\r\n"),
                400,
            ),
            (
                format!(
                    "GET / HTTP/1.1\r\n{base}Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ),
                400,
            ),
        ];
        for (wire, status) in cases {
            let got = Upgrade::from_request(&request(wire.as_bytes())).map(|_| ());
            assert_eq!(got.map_err(|e| e.status()), Err(status), "{wire}");
        }
    }

    /// `resp` as a client receives it: encoded by the server, decoded by the client's codec.
    fn on_the_wire(resp: &Response) -> crate::http1::ClientResponse {
        let mut out = Vec::new();
        let cx = crate::http1::EncodeContext {
            date: b"Sun, 22 Nov 2026 00:00:00 GMT",
            server: None,
            head_request: false,
            keep_alive: true,
            http10: false,
        };
        crate::http1::encode_response(resp, &cx, &mut out);
        let mut buf = bytes::BytesMut::from(&out[..]);
        let mut decoder = crate::http1::ResponseDecoder::new(crate::http1::Limits::default());
        decoder
            .decode(&mut buf, false)
            .unwrap()
            .expect("a whole answer")
    }

    #[test]
    fn the_client_checks_the_answer() {
        let (wire, key) = client_request("h:80", "/ws", [7; 16], &["chat"], None);
        let up = Upgrade::from_request(&request(&wire)).unwrap();
        let resp = on_the_wire(&up.response(Some("chat")));
        assert_eq!(resp.header("connection"), Some(&b"Upgrade"[..]));
        let headers = || resp.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref()));
        let chosen = check_answer(resp.status, headers(), &key, &["chat"], None).unwrap();
        assert_eq!(chosen.protocol.as_deref(), Some("chat"));
        // Another key's accept, or no switch, is refused.
        let other = on_the_wire(
            &Upgrade::from_request(&request(&client_request("h", "/", [8; 16], &[], None).0))
                .unwrap()
                .response(None),
        );
        let other_headers = other.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref()));
        assert!(check_answer(101, other_headers, &key, &["chat"], None).is_err());
        assert!(check_answer(200, headers(), &key, &["chat"], None).is_err());
    }
}
