//! The client side: requests out, responses in.

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::ChunkedDecoder;
use super::framing::{Delimited, FramingFields, connection_tokens, token_is};
use super::{Http1Error, Limits};

/// A response as read by a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order (names as sent).
    pub headers: Vec<(String, Bytes)>,
    /// The body (empty for HEAD, 1xx, 204, 304).
    pub body: Bytes,
    /// Whether the server keeps the connection open for another request.
    pub keep_alive: bool,
}

impl ClientResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes a request head (and body) into `out`. `headers` must not contain `Host`,
/// `Content-Length` or `Transfer-Encoding`: they are written here.
pub fn encode_request(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the server closes the connection.
    UntilClose,
}

struct Pending {
    response: ClientResponse,
    body: Body,
    bytes: Vec<u8>,
}

/// Reads one response at a time from the front of a connection buffer.
pub struct ResponseDecoder {
    limits: Limits,
    pending: Option<Pending>,
}

impl std::fmt::Debug for ResponseDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseDecoder")
            .field("in_body", &self.pending.is_some())
            .finish()
    }
}

impl ResponseDecoder {
    /// A decoder with `limits` (`max_body_bytes` caps the response body).
    pub fn new(limits: Limits) -> Self {
        ResponseDecoder {
            limits,
            pending: None,
        }
    }

    /// Takes the response to a request from the front of `buf`: `Ok(None)` when more bytes are
    /// needed. `head_request`: the request was HEAD (no body follows). Interim 1xx responses
    /// are skipped.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        head_request: bool,
    ) -> Result<Option<ClientResponse>, Http1Error> {
        loop {
            if self.pending.is_none() {
                let Some((response, body, len)) = self.parse_head(buf, head_request)? else {
                    return Ok(None);
                };
                buf.advance(len);
                if is_interim(response.status) {
                    continue;
                }
                match body {
                    None => return Ok(Some(response)),
                    Some(body) => {
                        self.pending = Some(Pending {
                            response,
                            body,
                            bytes: Vec::new(),
                        })
                    }
                }
            }
            let p = self.pending.as_mut().expect("pending response");
            let done = match &mut p.body {
                Body::Length(n) => {
                    let want = (*n - p.bytes.len() as u64) as usize;
                    let take = want.min(buf.len());
                    p.bytes.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    p.bytes.len() as u64 == *n
                }
                Body::Chunked(dec) => {
                    let used = dec.decode(buf, &mut p.bytes)?;
                    buf.advance(used);
                    dec.is_done()
                }
                Body::UntilClose => {
                    p.bytes.extend_from_slice(buf);
                    buf.clear();
                    if p.bytes.len() as u64 > self.limits.max_body_bytes {
                        return Err(Http1Error::BodyTooLarge);
                    }
                    false
                }
            };
            if !done {
                return Ok(None);
            }
            let mut p = self.pending.take().expect("pending response");
            p.response.body = Bytes::from(p.bytes);
            return Ok(Some(p.response));
        }
    }

    /// The server closed the connection: completes a response delimited by the close, or says
    /// the response was cut short.
    pub fn finish(&mut self) -> Result<Option<ClientResponse>, Http1Error> {
        match self.pending.take() {
            None => Ok(None),
            Some(mut p) => match p.body {
                Body::UntilClose => {
                    p.response.body = Bytes::from(p.bytes);
                    p.response.keep_alive = false;
                    Ok(Some(p.response))
                }
                _ => Err(Http1Error::BadRequest("connection closed mid-response")),
            },
        }
    }

    fn parse_head(
        &self,
        buf: &[u8],
        head_request: bool,
    ) -> Result<Option<(ClientResponse, Option<Body>, usize)>, Http1Error> {
        let mut headers = Vec::new();
        let Some(head) = parse_head_with(&self.limits, buf, head_request, |h| {
            headers.push((h.name.to_string(), Bytes::copy_from_slice(h.value)))
        })?
        else {
            return Ok(None);
        };
        let response = ClientResponse {
            status: head.status,
            headers,
            body: Bytes::new(),
            keep_alive: !head.close,
        };
        Ok(Some((response, head.body, head.len)))
    }
}

/// What a response head says about the message that follows it.
struct Head {
    status: u16,
    /// `None`: no body follows.
    body: Option<Body>,
    close: bool,
    /// Bytes of the head.
    len: usize,
}

/// Header slots tried on the stack before a head with more fields is parsed again on the heap.
const STACK_HEADERS: usize = 32;

/// Parses a response head at the front of `buf` (`Ok(None)`: incomplete), calling `each` for
/// every header field in order.
fn parse_head_with(
    limits: &Limits,
    buf: &[u8],
    head_request: bool,
    mut each: impl FnMut(&httparse::Header<'_>),
) -> Result<Option<Head>, Http1Error> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let mut resp = httparse::Response::new(&mut stack[..limits.max_headers.min(STACK_HEADERS)]);
    let mut parsed = resp.parse(buf);
    if matches!(parsed, Err(httparse::Error::TooManyHeaders)) && limits.max_headers > STACK_HEADERS
    {
        heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
        resp = httparse::Response::new(&mut heap);
        parsed = resp.parse(buf);
    }
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head_bytes {
                return Err(Http1Error::HeadersTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Http1Error::HeadersTooLarge),
        Err(_) => return Err(Http1Error::BadRequest("malformed response")),
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut fields = FramingFields::default();
    let mut close = http10;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if token_is(name, b"content-length") {
            fields.content_length(h.value)?;
        } else if token_is(name, b"transfer-encoding") {
            fields.transfer_encoding(h.value)?;
        } else if token_is(name, b"connection") {
            let (c, k) = connection_tokens(h.value);
            if c {
                close = true;
            } else if http10 && k {
                close = false;
            }
        }
        each(h);
    }
    let bodiless = head_request || status < 200 || status == 204 || status == 304;
    // Framing errors count even where no body follows: the fields are wrong either way.
    let delimited = fields.delimited()?;
    let body = if bodiless {
        None
    } else {
        match delimited {
            Delimited::Chunked => Some(Body::Chunked(ChunkedDecoder::new(limits.max_body_bytes))),
            Delimited::Length(n) if n > limits.max_body_bytes => {
                return Err(Http1Error::BodyTooLarge);
            }
            Delimited::Length(n) => (n > 0).then_some(Body::Length(n)),
            Delimited::Unframed => {
                close = true;
                Some(Body::UntilClose)
            }
        }
    };
    Ok(Some(Head {
        status,
        body,
        close,
        len,
    }))
}

/// One response as seen by [`ResponseFramer`]: its status and size, not its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramedResponse {
    /// Status code.
    pub status: u16,
    /// Bytes of the head.
    pub head_bytes: usize,
    /// Bytes of the body after transfer decoding.
    pub body_bytes: u64,
    /// Whether the server keeps the connection open for another request.
    pub keep_alive: bool,
}

/// Finds where responses begin and end without keeping their bytes: the framing half of
/// [`ResponseDecoder`] for clients that only count and check responses (load generators,
/// health checks). Allocation-free per response.
///
/// The head of a response must be contiguous in the input passed to [`advance`]; a body may be
/// split across any number of calls.
///
/// [`advance`]: ResponseFramer::advance
pub struct ResponseFramer {
    limits: Limits,
    body: Option<(FramedResponse, Body)>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for ResponseFramer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFramer")
            .field("in_body", &self.body.is_some())
            .finish()
    }
}

impl ResponseFramer {
    /// A framer with `limits` (`max_body_bytes` caps the response body).
    pub fn new(limits: Limits) -> Self {
        ResponseFramer {
            limits,
            body: None,
            scratch: Vec::new(),
        }
    }

    /// Whether the next bytes belong to a response head (which must arrive contiguous), rather
    /// than to a body.
    pub fn in_head(&self) -> bool {
        self.body.is_none()
    }

    /// Consumes bytes from the front of `input`: returns how many, and the response they
    /// completed, if any. `(0, None)` means a head is incomplete: call again with more bytes
    /// appended. `head_request`: the request this response answers was HEAD. Interim 1xx
    /// responses are consumed and not returned.
    pub fn advance(
        &mut self,
        input: &[u8],
        head_request: bool,
    ) -> Result<(usize, Option<FramedResponse>), Http1Error> {
        let mut used = 0;
        loop {
            if self.body.is_none() {
                let Some(head) =
                    parse_head_with(&self.limits, &input[used..], head_request, |_| {})?
                else {
                    return Ok((used, None));
                };
                used += head.len;
                if is_interim(head.status) {
                    continue;
                }
                let framed = FramedResponse {
                    status: head.status,
                    head_bytes: head.len,
                    body_bytes: 0,
                    keep_alive: !head.close,
                };
                match head.body {
                    None => return Ok((used, Some(framed))),
                    Some(body) => self.body = Some((framed, body)),
                }
            }
            let (framed, body) = self.body.as_mut().expect("in a body");
            let rest = &input[used..];
            let done = match body {
                Body::Length(n) => {
                    let take = (*n - framed.body_bytes).min(rest.len() as u64);
                    framed.body_bytes += take;
                    used += take as usize;
                    framed.body_bytes == *n
                }
                Body::Chunked(dec) => {
                    self.scratch.clear();
                    used += dec.decode(rest, &mut self.scratch)?;
                    framed.body_bytes += self.scratch.len() as u64;
                    dec.is_done()
                }
                Body::UntilClose => {
                    framed.body_bytes += rest.len() as u64;
                    used += rest.len();
                    if framed.body_bytes > self.limits.max_body_bytes {
                        return Err(Http1Error::BodyTooLarge);
                    }
                    false
                }
            };
            if !done {
                return Ok((used, None));
            }
            let (framed, _) = self.body.take().expect("in a body");
            return Ok((used, Some(framed)));
        }
    }

    /// The server closed the connection: completes a response delimited by the close, or says
    /// the response was cut short. `Ok(None)`: no response was under way.
    pub fn finish(&mut self) -> Result<Option<FramedResponse>, Http1Error> {
        match self.body.take() {
            None => Ok(None),
            Some((mut framed, Body::UntilClose)) => {
                framed.keep_alive = false;
                Ok(Some(framed))
            }
            Some(_) => Err(Http1Error::BadRequest("connection closed mid-response")),
        }
    }
}

/// A 1xx answer another answer follows; 101 is final: the connection then speaks the
/// protocol it switched to.
fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8], head: bool) -> ClientResponse {
        let mut d = ResponseDecoder::new(Limits::default());
        let mut buf = BytesMut::from(input);
        d.decode(&mut buf, head).unwrap().expect("complete")
    }

    #[test]
    fn length_chunked_interim_and_head_responses() {
        let r = one(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false);
        assert_eq!(
            (r.status, &r.body[..], r.keep_alive),
            (200, &b"hello"[..], true)
        );
        let r = one(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        );
        assert_eq!((r.status, &r.body[..]), (201, &b"ok"[..]));
        let r = one(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true);
        assert!(r.body.is_empty());
    }

    #[test]
    fn close_delimited_bodies_end_at_close() {
        let mut d = ResponseDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\npart one, "[..]);
        assert!(d.decode(&mut buf, false).unwrap().is_none());
        buf.extend_from_slice(b"part two");
        assert!(d.decode(&mut buf, false).unwrap().is_none());
        let r = d.finish().unwrap().unwrap();
        assert_eq!(&r.body[..], b"part one, part two");
        assert!(!r.keep_alive);
    }

    #[test]
    fn requests_are_encoded_with_host_and_length() {
        let mut out = Vec::new();
        encode_request(
            "POST",
            "/x",
            "h:80",
            &[("A".into(), b"1".to_vec())],
            b"body",
            &mut out,
        );
        assert_eq!(
            out,
            b"POST /x HTTP/1.1\r\nHost: h:80\r\nA: 1\r\nContent-Length: 4\r\n\r\nbody"
        );
    }

    #[test]
    fn framer_counts_responses_split_anywhere() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\
HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        let want = [(200, 5, true), (201, 2, true), (204, 0, false)];
        // Every split point: heads are re-offered whole, bodies are fed as they come.
        for split in 0..wire.len() {
            let mut f = ResponseFramer::new(Limits::default());
            let mut got = Vec::new();
            let mut pending: Vec<u8> = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                pending.extend_from_slice(part);
                loop {
                    let (used, r) = f.advance(&pending, false).unwrap();
                    pending.drain(..used);
                    match r {
                        Some(r) => got.push((r.status, r.body_bytes, r.keep_alive)),
                        None if used == 0 || pending.is_empty() => break,
                        None => {}
                    }
                }
            }
            assert_eq!(got, want, "split at {split}");
            assert!(pending.is_empty());
        }
    }

    #[test]
    fn framer_refuses_bad_framing_and_cut_bodies() {
        let mut f = ResponseFramer::new(Limits::default());
        let bad = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(f.advance(bad, false).is_err());
        let mut f = ResponseFramer::new(Limits::default());
        let (used, r) = f
            .advance(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false)
            .unwrap();
        assert_eq!((used, r), (41, None));
        assert!(f.finish().is_err());
        let mut f = ResponseFramer::new(Limits::default());
        f.advance(b"HTTP/1.0 200 OK\r\n\r\nabc", false).unwrap();
        let r = f.finish().unwrap().unwrap();
        assert_eq!((r.body_bytes, r.keep_alive), (3, false));
    }
}
