//! Requests: the head tokenised by httparse, framing and connection rules decided here.

use std::ops::Range;

use std::rc::Rc;

use bytes::Bytes;

use super::framing::{Delimited, FramingFields, connection_tokens, token_is, trim};
use super::{Http1Error, Limits, Version};

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// Where a request's head bytes live.
#[derive(Clone)]
pub(crate) enum Head {
    /// A copy of its own (a head that arrived in pieces).
    Owned(Bytes),
    /// The receive buffer it arrived in, shared (a pooled buffer: no copy).
    Shared(Rc<dyn AsRef<[u8]>>),
}

impl Head {
    fn bytes(&self) -> &[u8] {
        match self {
            Head::Owned(b) => b,
            Head::Shared(s) => (**s).as_ref(),
        }
    }
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Head::Owned(b) => write!(f, "Owned({} bytes)", b.len()),
            Head::Shared(s) => write!(f, "Shared({} bytes)", (**s).as_ref().len()),
        }
    }
}

/// A parsed request. Method, target, names and values are ranges into the head, which stays in
/// the buffer it was received into when it arrived whole ([`ServerConn::handle_shared`](super::ServerConn::handle_shared):
/// no header byte is copied), or in one copy of its own when it arrived in pieces.
#[derive(Clone, Debug)]
pub struct Request {
    head: Head,
    method: Span,
    target: Span,
    /// The path and query within `target` (all of it unless the target is absolute-form).
    origin: Span,
    /// The host and port of an absolute-form target (`http://host:port/path`); empty if the
    /// target is not absolute-form (an empty authority is refused).
    authority: Span,
    version: Version,
    /// Where the header lines lie in `head` (validated by the parser, indexed on first use).
    header_lines: Range<u32>,
    /// `(name start, name end, value start, value end)` offsets into `head`, built the first
    /// time a handler asks for headers: a request nobody inspects costs no index.
    index: std::cell::OnceCell<Vec<[u32; 4]>>,
    body: Bytes,
    keep_alive: bool,
    expect_continue: bool,
    /// The method is `HEAD` (decided once, at parse time).
    head_method: bool,
    extension: Option<std::rc::Rc<dyn std::any::Any>>,
    client: Option<std::net::SocketAddr>,
}

/// Where a part of a request lies in its head: offsets kept small, so a request moves cheaply.
/// Heads are at most `Limits::max_head_bytes` and parsed only from buffers under 4 GiB.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    #[inline]
    fn of_range(r: Range<usize>) -> Span {
        Span {
            start: r.start as u32,
            end: r.end as u32,
        }
    }

    #[inline]
    fn of<'a>(&self, head: &'a [u8]) -> &'a [u8] {
        &head[self.start as usize..self.end as usize]
    }
}

/// `bytes` as text (httparse let request lines through only as UTF-8, so the fallback to ""
/// is never taken for parsed requests).
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

impl Request {
    /// The method (`GET`, `POST`, …).
    pub fn method(&self) -> &str {
        text(self.method.of(self.head.bytes()))
    }

    /// Whether the method is `HEAD` (no body goes with the response).
    pub fn is_head(&self) -> bool {
        self.head_method
    }

    /// The request target as sent: `/path?query`, or `http://host/path?query` (absolute-form,
    /// which a server must accept: RFC 9112 section 3.2.2), or `*`.
    pub fn target(&self) -> &str {
        text(self.target.of(self.head.bytes()))
    }

    /// The path part of the target (`/` for an absolute-form target without one).
    pub fn path(&self) -> &str {
        let t = self.origin.of(self.head.bytes());
        let path = t.iter().position(|&b| b == b'?').map_or(t, |q| &t[..q]);
        if path.is_empty() { "/" } else { text(path) }
    }

    /// The query part of the target, without `?`.
    pub fn query(&self) -> Option<&str> {
        let t = self.origin.of(self.head.bytes());
        t.iter().position(|&b| b == b'?').map(|q| text(&t[q + 1..]))
    }

    /// The host the request is for: the authority of an absolute-form target, which
    /// overrides the `Host` field (RFC 9112 section 3.2.2), else the `Host` field.
    pub fn host(&self) -> Option<&[u8]> {
        if self.authority.start == self.authority.end {
            return self.header("host");
        }
        Some(self.authority.of(self.head.bytes()))
    }

    /// HTTP/1.0 or HTTP/1.1.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let index = self
            .index
            .get_or_init(|| index_lines(self.head.bytes(), &self.header_lines));
        index.iter().map(|&[ns, ne, vs, ve]| {
            (
                std::str::from_utf8(&self.head.bytes()[ns as usize..ne as usize]).unwrap_or(""),
                &self.head.bytes()[vs as usize..ve as usize],
            )
        })
    }

    /// The whole body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether the connection stays open after this request (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the client sent `Expect: 100-continue`.
    pub fn expects_continue(&self) -> bool {
        self.expect_continue
    }

    /// Replaces the body (a server that read it in streaming mode hands it over whole).
    pub fn set_body(&mut self, body: Bytes) {
        self.body = body;
    }

    /// A value the serving layer attached to this request (a body stream, say).
    pub fn extension(&self) -> Option<&std::rc::Rc<dyn std::any::Any>> {
        self.extension.as_ref()
    }

    /// Attaches a value for the handler (the serving layer's body stream).
    pub fn set_extension(&mut self, value: std::rc::Rc<dyn std::any::Any>) {
        self.extension = Some(value);
    }

    /// The client's address as the serving layer knows it: the connection's peer, or the
    /// client a trusted PROXY protocol header named. `None` when the server was not asked to
    /// find it (`serve::Config::client_addr`) and no PROXY header gave it.
    pub fn client_addr(&self) -> Option<std::net::SocketAddr> {
        self.client
    }

    /// Sets what [`Request::client_addr`] says (the serving layer does, once per connection).
    pub fn set_client_addr(&mut self, addr: Option<std::net::SocketAddr>) {
        self.client = addr;
    }
}

/// Indexes the header lines of a head the parser already validated: `name: value` per CRLF
/// line, optional whitespace around the value.
fn index_lines(head: &[u8], lines: &Range<u32>) -> Vec<[u32; 4]> {
    let mut index = Vec::new();
    let mut at = lines.start as usize;
    let end = (lines.end as usize).min(head.len());
    while at < end {
        let line_end = head[at..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |i| at + i + 1);
        let line = &head[at..line_end];
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let mut vs = at + colon + 1;
            let mut ve = line_end;
            while ve > vs && matches!(head[ve - 1], b'\r' | b'\n' | b' ' | b'\t') {
                ve -= 1;
            }
            while vs < ve && matches!(head[vs], b' ' | b'\t') {
                vs += 1;
            }
            index.push([at as u32, (at + colon) as u32, vs as u32, ve as u32]);
        }
        at = line_end;
    }
    index
}

/// Most header fields a request may carry, whatever the limits say.
const HEADER_SLOTS: usize = 256;

/// What parsing a head yields: everything of a [`Request`] but where its bytes live.
pub(crate) struct ParsedHead {
    head_method: bool,
    method: Range<usize>,
    target: Range<usize>,
    origin: Range<usize>,
    authority: Option<Range<usize>>,
    version: Version,
    header_lines: Range<u32>,
    keep_alive: bool,
    expect_continue: bool,
}

impl ParsedHead {
    /// The request, its ranges pointing into `head`.
    #[inline]
    pub(crate) fn into_request(self, head: Head) -> Request {
        Request {
            head,
            method: Span::of_range(self.method),
            target: Span::of_range(self.target),
            origin: Span::of_range(self.origin),
            authority: self
                .authority
                .map_or(Span { start: 0, end: 0 }, Span::of_range),
            version: self.version,
            header_lines: self.header_lines,
            index: std::cell::OnceCell::new(),
            body: Bytes::new(),
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            head_method: self.head_method,
            extension: None,
            client: None,
        }
    }
}

/// Parses the head starting at `start` in `all`: `None` if incomplete. Ranges are into `all`,
/// the returned length counts from `start`.
#[inline]
pub(crate) fn parse_head_at(
    all: &[u8],
    start: usize,
    limits: &Limits,
) -> Result<Option<(ParsedHead, Framing, usize)>, Http1Error> {
    let buf = &all[start..];
    // On the stack and uninitialised: httparse fills only what it finds.
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
    let slots = &mut storage[..limits.max_headers.min(HEADER_SLOTS)];
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, slots) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(Http1Error::HeadersTooLarge),
        Err(httparse::Error::Version) => return Err(Http1Error::VersionNotSupported),
        Err(e) => {
            // A head cut short by the size limit is "too large", not "malformed".
            if buf.len() > limits.max_head_bytes {
                return Err(too_large(buf, limits));
            }
            return Err(Http1Error::BadRequest(match e {
                httparse::Error::HeaderName => "invalid header name",
                httparse::Error::HeaderValue => "invalid header value",
                httparse::Error::NewLine => "invalid line ending",
                httparse::Error::Token => "invalid method",
                httparse::Error::Status => "invalid request line",
                _ => "malformed request",
            }));
        }
    };
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => {
            if buf.len() > limits.max_head_bytes {
                return Err(too_large(buf, limits));
            }
            return Ok(None);
        }
    };
    if len > limits.max_head_bytes {
        return Err(too_large(buf, limits));
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(Http1Error::VersionNotSupported),
    };
    let base = all.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = range(req.method.unwrap_or("").as_bytes());
    let target = range(req.path.unwrap_or("").as_bytes());
    if target.is_empty() {
        return Err(Http1Error::BadRequest("empty request target"));
    }
    let (origin, authority) = split_target(all, target.clone())?;

    let mut fields = FramingFields::default();
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut host = 0;
    // The header lines run from the end of the request line to the blank line. httparse
    // checked the line ends with " HTTP/1.x" and CRLF (or a bare LF) after the target.
    let version_end = target.end - start + " HTTP/1.1".len();
    let first_line_end = version_end
        + if buf.get(version_end) == Some(&b'\r') {
            2
        } else {
            1
        };
    let header_lines = (start + first_line_end) as u32..(start + len.saturating_sub(2)) as u32;
    for h in req.headers.iter() {
        let name = h.name;
        // Only names of the lengths below can matter for framing: skip the rest cheaply.
        if !matches!(name.len(), 4 | 6 | 10 | 14 | 17) {
            continue;
        }
        let name = name.as_bytes();
        if token_is(name, b"content-length") {
            fields.content_length(h.value)?;
        } else if token_is(name, b"transfer-encoding") {
            fields.transfer_encoding(h.value)?;
        } else if token_is(name, b"connection") {
            let (c, k) = connection_tokens(h.value);
            close |= c;
            keep_alive_token |= k;
        } else if token_is(name, b"expect") {
            if token_is(trim(h.value), b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Http1Error::BadRequest("unsupported expectation"));
            }
        } else if token_is(name, b"host") {
            host += 1;
        }
    }
    if version == Version::Http11 && host != 1 {
        return Err(Http1Error::BadRequest("HTTP/1.1 needs exactly one Host"));
    }
    if version == Version::Http10 && fields.has_transfer_encoding() {
        return Err(Http1Error::BadRequest("Transfer-Encoding in HTTP/1.0"));
    }
    let framing = match fields.delimited()? {
        Delimited::Chunked => Framing::Chunked,
        Delimited::Length(n) if n > limits.max_body_bytes => {
            return Err(Http1Error::BodyTooLarge);
        }
        Delimited::Length(0) | Delimited::Unframed => Framing::None,
        Delimited::Length(n) => Framing::Length(n),
    };
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };
    let parsed = ParsedHead {
        method,
        target,
        origin,
        authority,
        version,
        header_lines,
        keep_alive,
        expect_continue: expect_continue && framing != Framing::None,
        head_method: req.method == Some("HEAD"),
    };
    Ok(Some((parsed, framing, len)))
}

/// The origin-form part (path and query) of `target` in `all`, and the authority if the
/// target is absolute-form (`scheme://authority/path?query`; any scheme is taken, as a proxy
/// would see them, but the authority must not be empty).
#[inline]
fn split_target(
    all: &[u8],
    target: Range<usize>,
) -> Result<(Range<usize>, Option<Range<usize>>), Http1Error> {
    let t = &all[target.clone()];
    if matches!(t.first(), Some(b'/' | b'*')) {
        return Ok((target, None));
    }
    let Some(colon) = t.iter().position(|&b| b == b':') else {
        return Err(Http1Error::BadRequest("invalid request target"));
    };
    let scheme_ok = colon > 0
        && t[0].is_ascii_alphabetic()
        && t[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || !t[colon..].starts_with(b"://") {
        return Err(Http1Error::BadRequest("invalid request target"));
    }
    let host_start = colon + 3;
    let host_end = t[host_start..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(t.len(), |i| host_start + i);
    let host = &t[host_start..host_end];
    if host.is_empty() || host.contains(&b'@') {
        // No host, or user info (RFC 9110 section 4.2.4 forbids it in http(s) URIs).
        return Err(Http1Error::BadRequest("invalid request target"));
    }
    if t.get(host_end) == Some(&b'#') {
        return Err(Http1Error::BadRequest("invalid request target"));
    }
    let base = target.start;
    Ok((
        base + host_end..target.end,
        Some(base + host_start..base + host_end),
    ))
}

/// 414 when the request line alone is over the limit, 431 otherwise.
fn too_large(buf: &[u8], limits: &Limits) -> Http1Error {
    let line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if line > limits.max_head_bytes {
        Http1Error::UriTooLong
    } else {
        Http1Error::HeadersTooLarge
    }
}
