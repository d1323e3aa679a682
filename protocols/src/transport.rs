//! A connection's byte stream as the serve loop, WebSocket sessions and the client see it:
//! plain TCP, or TLS over it (feature `tls`). Without the feature there is one case, and the
//! matches below compile away.

use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use coring::buf::{IoBuf, PooledBuf};
use coring::fs::File;
use coring::net::{PooledReader, TcpStream};

#[cfg(feature = "tls")]
use crate::tls::{TlsError, TlsStream};

/// A connection's stream.
pub(crate) enum Transport {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(TlsStream),
}

/// What reads a [`Transport`]: the core's pooled buffers, or TLS plaintext as it is decrypted.
pub(crate) enum Reader {
    Tcp(PooledReader),
    #[cfg(feature = "tls")]
    Tls(TlsStream),
}

/// Bytes as they came: a pooled receive buffer, or a piece of decrypted plaintext.
pub(crate) enum Chunk {
    Pooled(PooledBuf),
    #[cfg(feature = "tls")]
    Plain(bytes::BytesMut),
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        match self {
            Chunk::Pooled(b) => b,
            #[cfg(feature = "tls")]
            Chunk::Plain(b) => b,
        }
    }
}

impl crate::ws::RecvBuffer for Chunk {
    fn as_mut_bytes(&mut self) -> &mut [u8] {
        match self {
            Chunk::Pooled(b) => b.as_mut_slice(),
            #[cfg(feature = "tls")]
            Chunk::Plain(b) => b,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Chunk::Pooled(b) => b.into_bytes(),
            #[cfg(feature = "tls")]
            Chunk::Plain(b) => b.freeze(),
        }
    }
}

impl From<TcpStream> for Transport {
    fn from(stream: TcpStream) -> Transport {
        Transport::Tcp(stream)
    }
}

#[cfg(feature = "tls")]
impl From<TlsStream> for Transport {
    fn from(stream: TlsStream) -> Transport {
        Transport::Tls(stream)
    }
}

/// A TLS failure as the engine's error: the kind says what happened, the log says why.
#[cfg(feature = "tls")]
pub(crate) fn tls_error(e: TlsError) -> coring::Error {
    use coring::ErrorKind;
    let kind = match &e {
        TlsError::Io(e) => return *e,
        TlsError::Tls(_) => ErrorKind::Other,
        TlsError::HandshakeTimeout => ErrorKind::TimedOut,
        TlsError::HandshakeEof | TlsError::Truncated => ErrorKind::UnexpectedEof,
        TlsError::Closed => ErrorKind::BrokenPipe,
    };
    tracing::debug!(error = %e, "tls connection failed");
    coring::Error::new(kind, "tls")
}

impl Transport {
    /// The TCP stream beneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tcp(s) => s,
            #[cfg(feature = "tls")]
            Transport::Tls(s) => s.get_ref(),
        }
    }

    /// A reader for this stream (one at a time).
    pub(crate) fn reader(&self) -> Reader {
        match self {
            Transport::Tcp(s) => Reader::Tcp(s.pooled()),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => Reader::Tls(s.share()),
        }
    }

    /// Reads what arrives next onto the end of `buf` (room for 8 KiB is made): on TCP straight
    /// into it, over TLS the next plaintext piece. `Ok(0)` at the end of the stream.
    pub(crate) async fn read_into(
        &self,
        mut buf: bytes::BytesMut,
    ) -> (coring::Result<usize>, bytes::BytesMut) {
        match self {
            Transport::Tcp(s) => {
                buf.reserve(8 * 1024);
                s.read(buf).await
            }
            #[cfg(feature = "tls")]
            Transport::Tls(s) => match std::future::poll_fn(|cx| s.poll_recv(cx)).await {
                Ok(Some(piece)) => {
                    buf.extend_from_slice(&piece);
                    (Ok(piece.len()), buf)
                }
                Ok(None) => (Ok(0), buf),
                Err(e) => (Err(tls_error(e)), buf),
            },
        }
    }

    /// Writes all of `buf`, and hands it back.
    pub(crate) async fn write_all<B: IoBuf + AsRef<[u8]>>(
        &self,
        buf: B,
    ) -> (coring::Result<()>, B) {
        self.write(buf, false).await
    }

    /// Writes all of `buf` as the connection's last write: over TLS, `close_notify` goes with
    /// it (a [`Transport::shutdown`] after it only sends the FIN).
    pub(crate) async fn write_last<B: IoBuf + AsRef<[u8]>>(
        &self,
        buf: B,
    ) -> (coring::Result<()>, B) {
        self.write(buf, true).await
    }

    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    async fn write<B: IoBuf + AsRef<[u8]>>(&self, buf: B, last: bool) -> (coring::Result<()>, B) {
        match self {
            Transport::Tcp(s) => s.write_all(buf).await,
            #[cfg(feature = "tls")]
            // Boxed, as every TLS path here: a connection's future is as large as its largest
            // state, and a plain connection would otherwise carry the TLS write's.
            Transport::Tls(s) => {
                let data = buf.as_ref();
                let sent = if last {
                    Box::pin(s.write_last(data)).await
                } else {
                    Box::pin(s.write_all(data)).await
                };
                (sent.map_err(tls_error), buf)
            }
        }
    }

    /// Writes every byte of `bufs`, gathered into as few calls as the socket allows.
    // Without TLS the match below has one case.
    #[cfg_attr(not(feature = "tls"), allow(clippy::infallible_destructuring_match))]
    pub(crate) async fn write_batch(&self, mut bufs: Vec<Bytes>) -> coring::Result<()> {
        let stream = match self {
            Transport::Tcp(s) => s,
            #[cfg(feature = "tls")]
            Transport::Tls(s) => {
                // The frames go into the same records, as they lie.
                let mut parts: Vec<std::io::IoSlice<'_>> =
                    bufs.iter().map(|b| std::io::IoSlice::new(b)).collect();
                return Box::pin(s.write_all_vectored(&mut parts))
                    .await
                    .map_err(tls_error);
            }
        };
        if bufs.len() == 1 {
            let frame = bufs.swap_remove(0);
            return stream.write_all(frame).await.0;
        }
        while !bufs.is_empty() {
            let (result, back) = stream.writev(bufs).await;
            bufs = back;
            let mut n = result?;
            if n == 0 {
                return Err(coring::Error::new(coring::ErrorKind::WriteZero, "writev"));
            }
            let done = bufs
                .iter()
                .take_while(|b| {
                    let whole = n >= b.len();
                    if whole {
                        n -= b.len();
                    }
                    whole
                })
                .count();
            bufs.drain(..done);
            if let Some(first) = bufs.first_mut() {
                first.advance(n);
            }
        }
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset`: without a user-space copy on plain TCP, read
    /// and encrypted piece by piece over TLS. Returns the bytes sent (fewer if the file ends).
    pub(crate) async fn send_file(
        &self,
        file: &File,
        offset: u64,
        len: u64,
    ) -> coring::Result<u64> {
        match self {
            Transport::Tcp(s) => s.send_file(file, offset, len).await,
            #[cfg(feature = "tls")]
            Transport::Tls(s) => Box::pin(send_file_tls(s, file, offset, len)).await,
        }
    }

    /// Closes our side: the FIN, after `close_notify` over TLS. `Both` also stops reading.
    pub(crate) async fn shutdown(&self, how: std::net::Shutdown) -> coring::Result<()> {
        match self {
            Transport::Tcp(s) => s.shutdown(how).await,
            #[cfg(feature = "tls")]
            Transport::Tls(s) => {
                let result = Box::pin(s.shutdown()).await.map_err(tls_error);
                if how == std::net::Shutdown::Both {
                    return s.get_ref().shutdown(how).await;
                }
                result
            }
        }
    }
}

/// [`Transport::send_file`] over TLS: the file read and encrypted 64 KiB at a time.
#[cfg(feature = "tls")]
async fn send_file_tls(s: &TlsStream, file: &File, offset: u64, len: u64) -> coring::Result<u64> {
    const PIECE: usize = 64 * 1024;
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(PIECE.min(len as usize));
    while sent < len {
        let want = (len - sent).min(PIECE as u64) as usize;
        buf.clear();
        buf.reserve(want);
        let (got, back) = file.read_at(buf, offset + sent).await;
        buf = back;
        let n = got?.min(want);
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await.map_err(tls_error)?;
        sent += n as u64;
    }
    Ok(sent)
}

impl Reader {
    /// The next bytes received; `None` at the end of the stream.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<coring::Result<Option<Chunk>>> {
        match self {
            Reader::Tcp(r) => r
                .poll_next_buf(cx)
                .map(|got| got.map(|b| b.map(Chunk::Pooled))),
            #[cfg(feature = "tls")]
            Reader::Tls(s) => s
                .poll_recv(cx)
                .map(|got| got.map(|b| b.map(Chunk::Plain)).map_err(tls_error)),
        }
    }

    /// [`Reader::poll_next`] as a future.
    pub(crate) async fn next(&mut self) -> coring::Result<Option<Chunk>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// Why [`dial`] failed.
pub(crate) enum DialError {
    /// Connecting failed.
    Io(coring::Error),
    /// The host's name did not resolve.
    Resolve(crate::dns::ResolveError),
    /// The connect (or TLS handshake) deadline passed.
    Timeout,
    /// An `https://` or `wss://` URL without the `tls` feature, or a host that is no name.
    Unsupported(String),
    #[cfg(feature = "tls")]
    Tls(TlsError),
}

/// Connects to `url`'s host and port (within `timeout`; a name is resolved by `resolver`,
/// or by the core's own resolver when `None`), then runs TLS over the connection
/// for `https://` and `wss://`, checking the server's certificate for the URL's host with
/// `tls` (the public roots when `None`).
pub(crate) async fn dial(
    url: &crate::client::Url,
    timeout: std::time::Duration,
    resolver: Option<&crate::dns::Resolver>,
    #[cfg(feature = "tls")] tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Transport, DialError> {
    use crate::dns::ConnectError;
    let stream = crate::dns::connect_with(resolver, &url.host, url.port, timeout)
        .await
        .map_err(|e| match e {
            ConnectError::TimedOut => DialError::Timeout,
            ConnectError::Connect(e) => DialError::Io(e),
            ConnectError::Resolve(e) => DialError::Resolve(e),
        })?;
    if !url.tls {
        return Ok(Transport::Tcp(stream));
    }
    #[cfg(feature = "tls")]
    {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|_| DialError::Unsupported(format!("{}: not a server name", url.host)))?;
        let config = tls
            .cloned()
            .unwrap_or_else(crate::tls::default_client_config);
        let connector = crate::tls::TlsConnector::new(config).handshake_timeout(timeout);
        let tls = connector.connect(name, stream).await.map_err(|e| match e {
            TlsError::HandshakeTimeout => DialError::Timeout,
            e => DialError::Tls(e),
        })?;
        Ok(Transport::Tls(tls))
    }
    #[cfg(not(feature = "tls"))]
    {
        drop(stream);
        Err(DialError::Unsupported(format!(
            "{}://{}: TLS needs the `tls` feature",
            url.scheme(),
            url.authority()
        )))
    }
}
