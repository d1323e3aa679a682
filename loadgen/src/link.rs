//! A load connection's stream: plain TCP, or TLS over it (feature `tls`: `https://` URLs).

use std::net::{Shutdown, SocketAddr};

use bytes::Bytes;
use coring::buf::PooledBuf;
use coring::net::{PooledReader, TcpStream};

#[cfg(feature = "tls")]
use coring_protocols::tls::{
    TlsConnector, TlsStream,
    rustls::{ClientConfig, pki_types::ServerName},
};

use crate::stream::error_kind;

/// How a workload's connections speak TLS: the client configuration (roots, resumption) and
/// the name the server's certificate is checked for.
#[derive(Clone, Debug)]
pub struct TlsDial {
    #[cfg(feature = "tls")]
    connector: TlsConnector,
    #[cfg(feature = "tls")]
    name: ServerName<'static>,
}

impl TlsDial {
    /// TLS with `config` to the server named `host`.
    #[cfg(feature = "tls")]
    pub fn new(config: std::sync::Arc<ClientConfig>, host: &str) -> Result<TlsDial, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host}: not a name a TLS certificate can be for"))?;
        Ok(TlsDial {
            connector: TlsConnector::new(config),
            name,
        })
    }
}

/// The client configuration of an `https://` workload: TLS 1.3 and 1.2, the server's name
/// checked against the CA certificates in `ca` (a PEM file), or the public roots.
#[cfg(feature = "tls")]
pub fn client_config(ca: Option<&std::path::Path>) -> Result<std::sync::Arc<ClientConfig>, String> {
    let Some(ca) = ca else {
        return Ok(coring_protocols::tls::default_client_config());
    };
    let roots = coring_protocols::tls::roots_from_pem(ca).map_err(|e| e.to_string())?;
    let config = coring_protocols::tls::client_config(roots).map_err(|e| e.to_string())?;
    Ok(std::sync::Arc::new(config))
}

/// A connected stream.
pub(crate) enum Link {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(TlsStream),
}

/// Bytes as they arrived: a pooled receive buffer, or decrypted plaintext.
pub(crate) enum Piece {
    Pooled(PooledBuf),
    #[cfg(feature = "tls")]
    Plain(Bytes),
}

impl std::ops::Deref for Piece {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Piece::Pooled(b) => b,
            #[cfg(feature = "tls")]
            Piece::Plain(b) => b,
        }
    }
}

/// Reads a [`Link`].
pub(crate) enum LinkReader<'a> {
    Tcp(PooledReader),
    #[cfg(feature = "tls")]
    Tls(&'a TlsStream),
    #[cfg(not(feature = "tls"))]
    #[allow(dead_code)]
    Never(std::marker::PhantomData<&'a ()>),
}

/// Why a connection could not be made, as an error kind.
pub(crate) enum DialFailure {
    /// Connecting failed (an error kind of the engine's error).
    Connect(&'static str),
    /// The TLS handshake failed.
    Handshake(&'static str),
}

/// Connects to `addr`, then runs the TLS handshake if `tls` says so.
pub(crate) async fn connect(addr: SocketAddr, tls: Option<&TlsDial>) -> Result<Link, DialFailure> {
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        DialFailure::Connect(match error_kind(&e) {
            "io" => "connect",
            other => other,
        })
    })?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(Link::Tcp(stream)),
        #[cfg(feature = "tls")]
        Some(dial) => match dial.connector.connect(dial.name.clone(), stream).await {
            Ok(tls) => Ok(Link::Tls(tls)),
            Err(coring_protocols::tls::TlsError::HandshakeTimeout) => {
                Err(DialFailure::Handshake("handshake_timeout"))
            }
            Err(_) => Err(DialFailure::Handshake("tls_handshake")),
        },
        #[cfg(not(feature = "tls"))]
        Some(_) => Err(DialFailure::Handshake("tls_unsupported")),
    }
}

impl Link {
    pub(crate) fn reader(&self) -> LinkReader<'_> {
        match self {
            Link::Tcp(s) => LinkReader::Tcp(s.pooled()),
            #[cfg(feature = "tls")]
            Link::Tls(s) => LinkReader::Tls(s),
        }
    }

    /// Writes all of `bytes`; the error's kind.
    pub(crate) async fn write_all(&self, bytes: Bytes) -> Result<(), &'static str> {
        match self {
            Link::Tcp(s) => s.write_all(bytes).await.0.map_err(|e| error_kind(&e)),
            #[cfg(feature = "tls")]
            Link::Tls(s) => s.write_all(&bytes).await.map_err(tls_kind),
        }
    }

    /// Ends the connection both ways.
    // Without TLS the match below has one case.
    #[cfg_attr(not(feature = "tls"), allow(clippy::infallible_destructuring_match))]
    pub(crate) async fn shutdown(&self) {
        let tcp = match self {
            Link::Tcp(s) => s,
            #[cfg(feature = "tls")]
            Link::Tls(s) => s.get_ref(),
        };
        let _ = tcp.shutdown(Shutdown::Both).await;
    }
}

#[cfg(feature = "tls")]
fn tls_kind(e: coring_protocols::tls::TlsError) -> &'static str {
    use coring_protocols::tls::TlsError;
    match e {
        TlsError::Io(e) => error_kind(&e),
        TlsError::Truncated => "tls_truncated",
        _ => "tls",
    }
}

impl LinkReader<'_> {
    /// The next bytes received; `None` once the server closed its side.
    pub(crate) async fn next(&mut self) -> Result<Option<Piece>, &'static str> {
        match self {
            LinkReader::Tcp(r) => match r.next().await {
                Ok(b) => Ok(b.map(Piece::Pooled)),
                Err(e) => Err(error_kind(&e)),
            },
            #[cfg(feature = "tls")]
            LinkReader::Tls(s) => match s.recv().await {
                Ok(b) => Ok(b.map(Piece::Plain)),
                // A server may close without close_notify once it answered `Connection: close`:
                // the framing says whether the answer was whole.
                Err(coring_protocols::tls::TlsError::Truncated) => Ok(None),
                Err(e) => Err(tls_kind(e)),
            },
            #[cfg(not(feature = "tls"))]
            LinkReader::Never(_) => Ok(None),
        }
    }
}
