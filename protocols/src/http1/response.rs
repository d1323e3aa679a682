//! Responses and their serialisation, straight into a buffer the caller owns.

use std::borrow::Cow;

use bytes::Bytes;

/// A response: status, headers, and a body sent with a Content-Length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: HeaderList,
    body: Bytes,
    /// Set when the body is not in `body` but sent after the head by the caller.
    framing: Option<BodyFraming>,
}

/// A byte allowed in a field name (RFC 9110 section 5.6.2 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How a body sent after the head (a file, a stream) is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes follow (`Content-Length`).
    Length(u64),
    /// Chunks follow (`Transfer-Encoding: chunked`), ended by [`LAST_CHUNK`].
    Chunked,
}

/// The chunk that ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` to `out` as one chunk of a chunked body (nothing for empty data, which would
/// end the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    while n > 0 {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

impl Response {
    /// A response with `status` and no body.
    #[inline]
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: HeaderList::default(),
            body: Bytes::new(),
            framing: None,
        }
    }

    /// The body will be sent after the head by the caller, framed as `framing`; the encoder
    /// writes only the head.
    #[inline]
    pub fn body_follows(mut self, framing: BodyFraming) -> Self {
        self.framing = Some(framing);
        self.body = Bytes::new();
        self
    }

    /// How a body sent after the head is framed, if it is.
    pub fn following_body(&self) -> Option<BodyFraming> {
        self.framing
    }

    /// Adds a header. `Content-Length`, `Date`, `Server` and `Connection` are written by the
    /// encoder and ignored here.
    #[inline]
    pub fn header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<HeaderValue>,
    ) -> Self {
        self.headers.push(name.into(), value.into());
        self
    }

    /// Sets the body.
    #[inline]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Whether a header was refused: a name made at run time that is not a token, or a value
    /// made at run time holding CR, LF or NUL (which would let it split the response). Such a
    /// response is never sent as it is: [`encode_response`] writes a `500` that closes the
    /// connection instead.
    pub fn has_refused_header(&self) -> bool {
        self.headers.refused
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body.
    pub fn body_bytes(&self) -> &Bytes {
        &self.body
    }

    /// The headers set by the handler.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_ref(), v.as_bytes()))
    }
}

/// Header fields kept inline in a response before spilling to the heap: typical responses set
/// a handful, and a response should not cost an allocation for them.
const INLINE_FIELDS: usize = 3;

type Field = (Cow<'static, str>, HeaderValue);

/// A response header's value: text fixed in the program (nothing to count or free) or bytes
/// made at run time. Made from `&'static str`, `&'static [u8]`, `String`, `Vec<u8>` or
/// [`Bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderValue(Value);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Static(&'static [u8]),
    Shared(Bytes),
}

impl HeaderValue {
    /// The value's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Value::Static(b) => b,
            Value::Shared(b) => b,
        }
    }
}

impl AsRef<[u8]> for HeaderValue {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<&'static str> for HeaderValue {
    #[inline]
    fn from(v: &'static str) -> Self {
        HeaderValue(Value::Static(v.as_bytes()))
    }
}

impl From<&'static [u8]> for HeaderValue {
    #[inline]
    fn from(v: &'static [u8]) -> Self {
        HeaderValue(Value::Static(v))
    }
}

impl<const N: usize> From<&'static [u8; N]> for HeaderValue {
    #[inline]
    fn from(v: &'static [u8; N]) -> Self {
        HeaderValue(Value::Static(v))
    }
}

impl From<Bytes> for HeaderValue {
    fn from(v: Bytes) -> Self {
        HeaderValue(Value::Shared(v))
    }
}

impl From<String> for HeaderValue {
    fn from(v: String) -> Self {
        HeaderValue(Value::Shared(Bytes::from(v)))
    }
}

impl From<Vec<u8>> for HeaderValue {
    fn from(v: Vec<u8>) -> Self {
        HeaderValue(Value::Shared(Bytes::from(v)))
    }
}

/// A response's header fields: the first few inline, the rest on the heap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct HeaderList {
    inline: [Option<Field>; INLINE_FIELDS],
    more: Vec<Field>,
    /// A field was refused: its name is not a token, or its value holds CR, LF or NUL.
    refused: bool,
}

impl HeaderList {
    #[inline]
    fn push(&mut self, name: Cow<'static, str>, value: HeaderValue) {
        // What is fixed in the program is the program's to get right; what was made at run
        // time may carry a client's bytes, which must not be able to end the field and start
        // another (response splitting).
        let name_ok = match &name {
            Cow::Borrowed(_) => true,
            Cow::Owned(n) => !n.is_empty() && n.bytes().all(is_tchar),
        };
        let value_ok = match &value.0 {
            Value::Static(_) => true,
            Value::Shared(v) => !v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)),
        };
        if !(name_ok && value_ok) {
            self.refused = true;
            return;
        }
        match self.inline.iter_mut().find(|f| f.is_none()) {
            Some(free) => *free = Some((name, value)),
            None => self.more.push((name, value)),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Field> {
        self.inline
            .iter()
            .map_while(Option::as_ref)
            .chain(self.more.iter())
    }
}

/// What the encoder needs to know besides the response.
#[derive(Clone, Copy, Debug)]
pub struct EncodeContext<'a> {
    /// The current `Date` value (IMF-fixdate), refreshed by the caller once per second.
    pub date: &'a [u8],
    /// The `Server` value, if one is sent.
    pub server: Option<&'a [u8]>,
    /// Answering HEAD: headers as for GET, no body.
    pub head_request: bool,
    /// Whether the connection stays open; `false` adds `Connection: close`.
    pub keep_alive: bool,
    /// The request was HTTP/1.0, whose connections close unless the answer says otherwise:
    /// with `keep_alive`, `Connection: keep-alive` is added (RFC 9112 §9.3).
    pub http10: bool,
}

/// Headers the encoder owns (it writes them itself): Content-Length, Transfer-Encoding, Date,
/// Server, Connection.
fn is_reserved(name: &str) -> bool {
    match name.len() {
        4 => name.eq_ignore_ascii_case("date"),
        6 => name.eq_ignore_ascii_case("server"),
        10 => name.eq_ignore_ascii_case("connection"),
        14 => name.eq_ignore_ascii_case("content-length"),
        17 => name.eq_ignore_ascii_case("transfer-encoding"),
        _ => false,
    }
}

/// Bytes reserved for a response head besides the `Server` value: status line, `Date`,
/// `Content-Length` and a few short headers.
const HEAD_ESTIMATE: usize = 256;

/// Appends the response to `out`.
pub fn encode_response(resp: &Response, cx: &EncodeContext<'_>, out: &mut Vec<u8>) {
    if resp.headers.refused {
        let refusal = Response::new(500)
            .header("Content-Type", "text/plain")
            .body("the response carried an invalid header field");
        let cx = EncodeContext {
            keep_alive: false,
            ..*cx
        };
        return encode_response(&refusal, &cx, out);
    }
    // One reservation up front that covers the usual head, so the appends below rarely
    // reallocate (a head with long custom headers grows the buffer as it goes).
    out.reserve(HEAD_ESTIMATE + cx.server.map_or(0, <[u8]>::len) + resp.body.len());
    match (resp.status, cx.server) {
        // The usual answer's first line and the name after it in one append.
        (200, Some(server)) => {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: ");
            out.extend_from_slice(server);
            out.extend_from_slice(b"\r\nDate: ");
        }
        (200, None) => out.extend_from_slice(b"HTTP/1.1 200 OK\r\nDate: "),
        (status, server) => {
            out.extend_from_slice(b"HTTP/1.1 ");
            let mut code = itoa::Buffer::new();
            out.extend_from_slice(code.format(status).as_bytes());
            out.push(b' ');
            out.extend_from_slice(reason(status).as_bytes());
            if let Some(server) = server {
                out.extend_from_slice(b"\r\nServer: ");
                out.extend_from_slice(server);
            }
            out.extend_from_slice(b"\r\nDate: ");
        }
    }
    out.extend_from_slice(cx.date);
    out.extend_from_slice(b"\r\n");
    // Plain loops over the two parts: cheaper per field than a chained iterator.
    for (name, value) in resp.headers.inline.iter().map_while(Option::as_ref) {
        encode_field(name, value.as_bytes(), out);
    }
    for (name, value) in &resp.headers.more {
        encode_field(name, value.as_bytes(), out);
    }
    if resp.status == 101 {
        // The connection becomes another protocol's (a WebSocket upgrade).
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if !cx.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if cx.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    // 1xx, 204 and 304 carry no body and no Content-Length.
    let bodiless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    if !bodiless {
        match resp.framing {
            Some(BodyFraming::Chunked) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
            framing => {
                let len = match framing {
                    Some(BodyFraming::Length(n)) => n,
                    _ => resp.body.len() as u64,
                };
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                // This line's end and the head's in one append.
                out.extend_from_slice(b"\r\n\r\n");
                if !cx.head_request {
                    out.extend_from_slice(&resp.body);
                }
                return;
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless && !cx.head_request {
        out.extend_from_slice(&resp.body);
    }
}

/// Appends `name: value` and its line end, unless the encoder writes that field itself.
#[inline]
fn encode_field(name: &str, value: &[u8], out: &mut Vec<u8>) {
    if is_reserved(name) {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
