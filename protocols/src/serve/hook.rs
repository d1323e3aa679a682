//! Connection-level failures: each is logged (`tracing`, at debug) where the server drops or
//! closes a connection early, and handed to the user's callback ([`Config::on_error`]).
//!
//! [`Config::on_error`]: super::Config::on_error

use std::net::SocketAddr;
use std::sync::Arc;

pub use super::admit::Refusal;
use crate::http1::{Http1Error, Timer};

/// Why a PROXY listener closed a connection before HTTP began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyRefusal {
    /// The peer is not among the trusted networks.
    Untrusted,
    /// The connection did not start with a PROXY header.
    Missing,
    /// The header is malformed or over its size limit.
    Malformed,
    /// The header did not arrive in time.
    TimedOut,
    /// The connection ended inside the header.
    CutShort,
}

/// What ended a connection early.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnError<'a> {
    /// Refused before a byte was read (admission control, `max_connections`).
    Refused(Refusal),
    /// Closed by a PROXY listener before HTTP began.
    Proxy(ProxyRefusal),
    /// The TLS handshake failed.
    #[cfg(feature = "tls")]
    Tls(&'a crate::tls::TlsError),
    /// The client broke HTTP: it was answered with the error's status and closed.
    Http(&'a Http1Error),
    /// A request head (`Timer::Header`) or body (`Timer::Body`) did not come in time.
    TimedOut(Timer),
    /// The socket failed under the connection (reset, a write that timed out).
    Io(&'a coring::Error),
}

impl std::fmt::Display for ConnError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Refused(why) => write!(f, "refused: {why:?}"),
            ConnError::Proxy(why) => write!(f, "PROXY header: {why:?}"),
            #[cfg(feature = "tls")]
            ConnError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnError::Http(e) => write!(f, "{e} (answered {})", e.status()),
            ConnError::TimedOut(timer) => write!(f, "{timer:?} deadline passed"),
            ConnError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A callback for connection-level failures: the client's address (when known: the peer, or
/// the client a PROXY header named) and what went wrong. It runs on the connection's core, in
/// the connection's task, so it should be quick (count, log, send on a channel).
#[derive(Clone)]
pub struct ErrorHook(Arc<HookFn>);

/// The callback an [`ErrorHook`] holds.
type HookFn = dyn Fn(Option<SocketAddr>, &ConnError<'_>) + Send + Sync;

impl ErrorHook {
    /// Calls `f` for every connection-level failure.
    pub fn new(f: impl Fn(Option<SocketAddr>, &ConnError<'_>) + Send + Sync + 'static) -> Self {
        ErrorHook(Arc::new(f))
    }
}

impl std::fmt::Debug for ErrorHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErrorHook(..)")
    }
}

/// Logs `error` and hands it to `hook`, if any.
pub(crate) fn report(hook: Option<&ErrorHook>, client: Option<SocketAddr>, error: ConnError<'_>) {
    tracing::debug!(client = ?client, error = %error, "connection closed early");
    if let Some(hook) = hook {
        (hook.0)(client, &error);
    }
}
