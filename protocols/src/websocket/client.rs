//! Dialling a WebSocket server: `ws://host[:port]/path`, or `wss://` (feature `tls`).

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use coring::time;

use super::{WebSocket, WsConfig};
use crate::client::Url;
use crate::http1::{Http1Error, Limits, ResponseDecoder};
use crate::transport::{DialError, dial};
use crate::ws::Role;
use crate::ws::deflate::client_offer;
use crate::ws::handshake::{HandshakeError, check_answer, client_request, random_key};

/// How [`connect_with`] dials.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The session's limits and timers; `deflate` offers permessage-deflate (from a client's
    /// side `client_no_context_takeover` resets our compressor after each message and
    /// `server_no_context_takeover` asks the server to reset its own).
    pub config: WsConfig,
    /// Subprotocols offered, most wanted first.
    pub protocols: Vec<String>,
    /// Deadline for connecting and the opening handshake together.
    pub timeout: Duration,
    /// For `wss://`: the roots the server's certificate is checked against, ALPN, session
    /// resumption (the web's public roots when `None`).
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<crate::tls::rustls::ClientConfig>>,
    /// Resolves the host's name (the core's own
    /// [`Resolver::system`](crate::dns::Resolver::system) when `None`).
    pub resolver: Option<crate::dns::Resolver>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            config: WsConfig::default(),
            protocols: Vec::new(),
            timeout: Duration::from_secs(10),
            #[cfg(feature = "tls")]
            tls: None,
            resolver: None,
        }
    }
}

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Not a `ws://` (or, with the `tls` feature, `wss://`) URL this client can reach.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The TLS handshake failed (an untrusted certificate, one for another name).
    #[cfg(feature = "tls")]
    #[error("{0}")]
    Tls(crate::tls::TlsError),
    /// The host's name did not resolve.
    #[error("{0}")]
    Resolve(crate::dns::ResolveError),
    /// Connecting, writing or reading failed.
    #[error("I/O failed: {0}")]
    Io(#[from] coring::Error),
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The server answered with another status than `101` (a route that is no WebSocket,
    /// a refused upgrade).
    #[error("the server answered {0} instead of switching protocols")]
    Refused(u16),
    /// The server's answer is not HTTP this client accepts.
    #[error("bad answer: {0}")]
    Http(Http1Error),
    /// The server switched protocols but its answer breaks RFC 6455 (the accept key, a
    /// subprotocol or extension we did not offer).
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// The connection closed before an answer came.
    #[error("connection closed before the server answered")]
    Closed,
}

/// Opens a WebSocket to `url` (`ws://host[:port]/path?query`, or `wss://`) with the default
/// options.
pub async fn connect(url: &str) -> Result<WebSocket, ConnectError> {
    connect_with(url, &ConnectOptions::default()).await
}

/// Opens a WebSocket to `url` as `options` say.
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<WebSocket, ConnectError> {
    let url = Url::parse_ws(url).map_err(ConnectError::InvalidUrl)?;
    match time::timeout(options.timeout, handshake(&url, options)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout),
    }
}

async fn handshake(url: &Url, options: &ConnectOptions) -> Result<WebSocket, ConnectError> {
    let stream = dial(
        url,
        options.timeout,
        options.resolver.as_ref(),
        #[cfg(feature = "tls")]
        options.tls.as_ref(),
    )
    .await
    .map_err(|e| match e {
        DialError::Io(e) => ConnectError::Io(e),
        DialError::Resolve(e) => ConnectError::Resolve(e),
        DialError::Timeout => ConnectError::Timeout,
        DialError::Unsupported(why) => ConnectError::InvalidUrl(why),
        #[cfg(feature = "tls")]
        DialError::Tls(e) => ConnectError::Tls(e),
    })?;
    let mut reader = stream.reader();
    let key = random_key();
    let offered: Vec<&str> = options.protocols.iter().map(String::as_str).collect();
    let offer = options.config.deflate.as_ref().map(client_offer);
    let (request, key) = client_request(
        &url.authority(),
        &url.target,
        key,
        &offered,
        offer.as_deref(),
    );
    let (written, _) = stream.write_all(request).await;
    written?;
    let mut decoder = ResponseDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(4096);
    let answer = loop {
        if let Some(answer) = decoder
            .decode(&mut buf, false)
            .map_err(ConnectError::Http)?
        {
            break answer;
        }
        match reader.next().await? {
            Some(chunk) => buf.extend_from_slice(chunk.as_ref()),
            None => return Err(ConnectError::Closed),
        }
    };
    if answer.status != 101 {
        return Err(ConnectError::Refused(answer.status));
    }
    let headers = answer.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref()));
    let agreed = check_answer(
        answer.status,
        headers,
        &key,
        &offered,
        options.config.deflate.as_ref(),
    )?;
    Ok(WebSocket::on_stream(
        Rc::new(stream),
        Some(reader),
        &buf,
        Role::Client,
        std::sync::Arc::new(options.config.clone()),
        agreed.deflate,
        agreed.protocol,
    ))
}
