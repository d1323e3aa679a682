//! An HTTP/1.1 client on coring (`http://`, and `https://` with the `tls` feature): a
//! keep-alive pool per origin, timeouts,
//! response size limit, redirects, one retry of idempotent requests on a stale pooled
//! connection, an optional cookie jar, and a blocking API for tools and tests.
//!
//! ```no_run
//! let resp = coring_protocols::client::blocking::get("http://127.0.0.1:8080/plaintext")?;
//! assert_eq!(resp.status, 200);
//! # Ok::<(), coring_protocols::client::ClientError>(())
//! ```

mod url;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use coring::time::{self, timeout_at};

use crate::http1::{ClientResponse, Http1Error, Limits, ResponseDecoder, encode_request};
use crate::transport::{DialError, Transport, dial};
pub use url::Url;

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not an `http://` (or, with the `tls` feature, `https://`) URL this client
    /// can reach.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The TLS handshake failed (an untrusted certificate, one for another name).
    #[cfg(feature = "tls")]
    #[error("{0}")]
    Tls(crate::tls::TlsError),
    /// The host's name did not resolve.
    #[error("{0}")]
    Resolve(crate::dns::ResolveError),
    /// Connecting failed.
    #[error("connect failed: {0}")]
    Connect(coring::Error),
    /// Reading or writing the connection failed.
    #[error("I/O failed: {0}")]
    Io(coring::Error),
    /// The connect or request deadline passed.
    #[error("timed out")]
    Timeout,
    /// The server's response was malformed or over a limit.
    #[error("bad response: {0}")]
    Protocol(Http1Error),
    /// The connection closed before a response arrived.
    #[error("connection closed before the response")]
    Closed,
    /// More redirects than allowed.
    #[error("too many redirects")]
    TooManyRedirects,
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Deadline for a whole request (all redirects included).
    pub request_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// How long an idle pooled connection is reused.
    pub idle_timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: u64,
    /// Redirects followed (0: return the 3xx as is).
    pub max_redirects: usize,
    /// Keep cookies set by servers and send them back.
    pub cookies: bool,
    /// The `User-Agent` value.
    pub user_agent: String,
    /// For `https://`: the roots servers' certificates are checked against, session
    /// resumption (the web's public roots when `None`).
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<crate::tls::rustls::ClientConfig>>,
    /// Resolves hosts' names (the core's own [`Resolver::system`](crate::dns::Resolver::system)
    /// when `None`).
    pub resolver: Option<crate::dns::Resolver>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_idle_per_host: 32,
            idle_timeout: Duration::from_secs(60),
            max_response_bytes: 64 * 1024 * 1024,
            max_redirects: 10,
            cookies: false,
            user_agent: "coring".into(),
            #[cfg(feature = "tls")]
            tls: None,
            resolver: None,
        }
    }
}

/// A request to send.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    /// Method.
    pub method: String,
    /// Absolute `http://` URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body (sent with a Content-Length).
    pub body: Bytes,
}

impl ClientRequest {
    /// `method url` with no body.
    pub fn new(method: &str, url: &str) -> Self {
        ClientRequest {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

struct Conn {
    stream: Transport,
    buf: BytesMut,
    idle_since: Instant,
}

/// A client for the current core (not `Send`; make one per core).
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    config: ClientConfig,
    pool: RefCell<HashMap<String, Vec<Conn>>>,
    cookies: RefCell<HashMap<String, Vec<(String, String)>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ClientConfig::default())
    }
}

impl Client {
    /// A client with `config`.
    pub fn new(config: ClientConfig) -> Self {
        Client {
            inner: Rc::new(Inner {
                config,
                pool: RefCell::new(HashMap::new()),
                cookies: RefCell::new(HashMap::new()),
            }),
        }
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<ClientResponse, ClientError> {
        self.send(ClientRequest::new("GET", url)).await
    }

    /// Sends `req`, following redirects, within the request timeout.
    pub async fn send(&self, req: ClientRequest) -> Result<ClientResponse, ClientError> {
        let deadline = time::now() + self.inner.config.request_timeout;
        match timeout_at(deadline, self.follow(req)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// Idle connections pooled for an origin (`https://host:port`; `host:port` means
    /// `http://host:port`).
    pub fn idle_connections(&self, origin: &str) -> usize {
        let key = if origin.contains("://") {
            origin.to_owned()
        } else {
            format!("http://{origin}")
        };
        self.inner.pool.borrow().get(&key).map_or(0, Vec::len)
    }

    async fn follow(&self, mut req: ClientRequest) -> Result<ClientResponse, ClientError> {
        let mut redirects = 0;
        loop {
            let url = Url::parse(&req.url).map_err(ClientError::InvalidUrl)?;
            let resp = self.send_once(&req, &url).await?;
            let location = resp
                .header("location")
                .map(|l| String::from_utf8_lossy(l).into_owned());
            let (Some(location), true) =
                (location, matches!(resp.status, 301 | 302 | 303 | 307 | 308))
            else {
                return Ok(resp);
            };
            if self.inner.config.max_redirects == 0 {
                return Ok(resp);
            }
            redirects += 1;
            if redirects > self.inner.config.max_redirects {
                return Err(ClientError::TooManyRedirects);
            }
            req.url = url.join(&location).map_err(ClientError::InvalidUrl)?;
            // 303 always becomes GET (HEAD stays HEAD); 301/302 turn POST into GET as browsers
            // do; 307/308 keep method and body.
            let to_get = match resp.status {
                303 => req.method != "HEAD",
                301 | 302 => req.method == "POST",
                _ => false,
            };
            if to_get {
                req.method = "GET".into();
                req.body = Bytes::new();
            }
        }
    }

    async fn send_once(
        &self,
        req: &ClientRequest,
        url: &Url,
    ) -> Result<ClientResponse, ClientError> {
        let idempotent = matches!(
            req.method.as_str(),
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        );
        let mut out = Vec::with_capacity(256 + req.body.len());
        let mut headers = req.headers.clone();
        headers.push((
            "User-Agent".into(),
            self.inner.config.user_agent.clone().into_bytes(),
        ));
        if self.inner.config.cookies
            && let Some(cookie) = self.cookie_header(&url.host)
        {
            headers.push(("Cookie".into(), cookie.into_bytes()));
        }
        encode_request(
            &req.method,
            &url.target,
            &url.authority(),
            &headers,
            &req.body,
            &mut out,
        );
        let head = req.method == "HEAD";
        let out = Bytes::from(out);

        if let Some(conn) = self.checkout(&url.origin()) {
            match self.exchange(conn, out.clone(), head).await {
                Ok((resp, conn)) => return Ok(self.finish(url, resp, conn)),
                // A pooled connection the server already closed: retry once if safe.
                Err((ClientError::Closed | ClientError::Io(_), false)) if idempotent => {}
                Err((e, _)) => return Err(e),
            }
        }
        let conn = self.connect(url).await?;
        match self.exchange(conn, out, head).await {
            Ok((resp, conn)) => Ok(self.finish(url, resp, conn)),
            Err((e, _)) => Err(e),
        }
    }

    fn finish(&self, url: &Url, resp: ClientResponse, conn: Option<Conn>) -> ClientResponse {
        if self.inner.config.cookies {
            self.store_cookies(&url.host, &resp);
        }
        if let Some(conn) = conn {
            self.checkin(url.origin(), conn);
        }
        resp
    }

    async fn connect(&self, url: &Url) -> Result<Conn, ClientError> {
        let stream = dial(
            url,
            self.inner.config.connect_timeout,
            self.inner.config.resolver.as_ref(),
            #[cfg(feature = "tls")]
            self.inner.config.tls.as_ref(),
        )
        .await
        .map_err(|e| match e {
            DialError::Io(e) => ClientError::Connect(e),
            DialError::Resolve(e) => ClientError::Resolve(e),
            DialError::Timeout => ClientError::Timeout,
            DialError::Unsupported(why) => ClientError::InvalidUrl(why),
            #[cfg(feature = "tls")]
            DialError::Tls(e) => ClientError::Tls(e),
        })?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            idle_since: time::now(),
        })
    }

    /// Writes the request and reads the response. On failure, the flag says whether any
    /// response byte had arrived (then retrying could repeat a request the server acted on).
    async fn exchange(
        &self,
        mut conn: Conn,
        out: Bytes,
        head: bool,
    ) -> Result<(ClientResponse, Option<Conn>), (ClientError, bool)> {
        let (r, _) = conn.stream.write_all(out).await;
        r.map_err(|e| (ClientError::Io(e), false))?;
        let limits = Limits {
            max_body_bytes: self.inner.config.max_response_bytes,
            ..Limits::default()
        };
        let mut decoder = ResponseDecoder::new(limits);
        let mut got_any = !conn.buf.is_empty();
        loop {
            match decoder.decode(&mut conn.buf, head) {
                Ok(Some(resp)) => {
                    let keep = resp.keep_alive && conn.buf.is_empty();
                    return Ok((resp, keep.then_some(conn)));
                }
                Ok(None) => {}
                Err(e) => return Err((ClientError::Protocol(e), true)),
            }
            let (r, back) = conn.stream.read_into(std::mem::take(&mut conn.buf)).await;
            conn.buf = back;
            match r {
                Ok(0) => {
                    return match decoder.finish() {
                        Ok(Some(resp)) => Ok((resp, None)),
                        Ok(None) => Err((ClientError::Closed, got_any)),
                        Err(e) => Err((ClientError::Protocol(e), true)),
                    };
                }
                Ok(_) => got_any = true,
                Err(e) => return Err((ClientError::Io(e), got_any)),
            }
        }
    }

    fn checkout(&self, authority: &str) -> Option<Conn> {
        let mut pool = self.inner.pool.borrow_mut();
        let conns = pool.get_mut(authority)?;
        let now = time::now();
        while let Some(conn) = conns.pop() {
            if now.duration_since(conn.idle_since) < self.inner.config.idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, authority: String, mut conn: Conn) {
        conn.idle_since = time::now();
        let mut pool = self.inner.pool.borrow_mut();
        let conns = pool.entry(authority).or_default();
        if conns.len() < self.inner.config.max_idle_per_host {
            conns.push(conn);
        }
    }

    fn cookie_header(&self, host: &str) -> Option<String> {
        let jar = self.inner.cookies.borrow();
        let cookies = jar.get(host)?;
        (!cookies.is_empty()).then(|| {
            cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn store_cookies(&self, host: &str, resp: &ClientResponse) {
        let mut jar = self.inner.cookies.borrow_mut();
        for (name, value) in &resp.headers {
            if !name.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let text = String::from_utf8_lossy(value);
            let pair = text.split(';').next().unwrap_or("");
            if let Some((n, v)) = pair.split_once('=') {
                let entry = jar.entry(host.to_string()).or_default();
                entry.retain(|(k, _)| k != n.trim());
                entry.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
    }
}

/// Blocking calls for tools and tests: each runs a one-core coring runtime on the calling
/// thread.
pub mod blocking {
    use super::{Client, ClientConfig, ClientError, ClientRequest, ClientResponse};

    /// `GET url`.
    pub fn get(url: &str) -> Result<ClientResponse, ClientError> {
        send(ClientConfig::default(), ClientRequest::new("GET", url))
    }

    /// Sends `req` with a client configured by `config`.
    pub fn send(config: ClientConfig, req: ClientRequest) -> Result<ClientResponse, ClientError> {
        coring::block_on(async move { Client::new(config).send(req).await })
    }
}
