//! What a handler returns: a response, and optionally a body sent after its head (a file
//! without a user-space copy, or a stream of chunks).

use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use coring::fs::File;
use futures_core::Stream;

use crate::http1::{BodyFraming, Request, Response};

/// A response plus, optionally, its body as a file range or a stream.
pub struct Reply {
    pub(crate) response: Response,
    pub(crate) source: Source,
}

pub(crate) enum Source {
    /// The body (if any) is in the response.
    Inline,
    /// `len` bytes of `file` from `offset`, sent with splice/sendfile.
    File {
        file: Rc<File>,
        offset: u64,
        len: u64,
    },
    /// Chunks written as they come (`Transfer-Encoding: chunked`).
    Stream(Pin<Box<dyn Stream<Item = Bytes>>>),
    /// After a `101`, the connection is handed to this (a WebSocket session).
    Upgrade(UpgradeFn),
}

/// What runs a connection after its `101 Switching Protocols`: it spawns the new protocol's
/// task, which holds the connection's place (`Live`) until it ends.
pub(crate) type UpgradeFn = Box<dyn FnOnce(super::Upgraded, super::Live)>;

pin_project_lite::pin_project! {
    /// A protocol's session holding its connection's place until it ends. A named future: an
    /// async block awaiting the session would keep it twice (as captured, and as awaited).
    struct Holding<F> {
        #[pin]
        future: F,
        _live: super::Live,
    }
}

impl<F: std::future::Future<Output = ()>> std::future::Future for Holding<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.project().future.poll(cx)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Inline => "inline",
            Source::File { .. } => "file",
            Source::Stream(_) => "stream",
            Source::Upgrade(_) => "upgrade",
        };
        f.debug_struct("Reply")
            .field("status", &self.response.status())
            .field("source", &source)
            .finish()
    }
}

/// What a handler may answer with: a [`Response`] (body inline) or a [`Reply`] (a body that
/// follows). Implemented for those two only; the server encodes the answer where it lies.
pub trait IntoReply: sealed::Sealed + 'static {
    /// The response head (and inline body).
    #[doc(hidden)]
    fn response(&self) -> &Response;

    /// Whether a body follows the head (a file or a stream).
    #[doc(hidden)]
    fn body_follows(&self) -> bool;

    /// The whole reply, for sending a body that follows.
    #[doc(hidden)]
    fn into_reply(self) -> Reply;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::http1::Response {}
    impl Sealed for super::Reply {}
}

impl IntoReply for Response {
    #[inline]
    fn response(&self) -> &Response {
        self
    }

    #[inline]
    fn body_follows(&self) -> bool {
        false
    }

    fn into_reply(self) -> Reply {
        self.into()
    }
}

impl IntoReply for Reply {
    #[inline]
    fn response(&self) -> &Response {
        &self.response
    }

    #[inline]
    fn body_follows(&self) -> bool {
        !matches!(self.source, Source::Inline)
    }

    fn into_reply(self) -> Reply {
        self
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply {
            response,
            source: Source::Inline,
        }
    }
}

impl Reply {
    /// `response` (a `101 Switching Protocols`), then the connection is `then`'s: it gets the
    /// stream and whatever the client sent after its request. A response of another status is
    /// sent as it is and `then` is dropped.
    pub fn upgrade<F, Fut>(response: Response, then: F) -> Reply
    where
        F: FnOnce(super::Upgraded) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        Reply {
            response,
            // The session's future is the task's own: one allocation, not a task and a box.
            // Made before the task, which then holds only it and the connection's place.
            source: Source::Upgrade(Box::new(move |up, live| {
                coring::spawn_local(Holding {
                    future: then(up),
                    _live: live,
                });
            })),
        }
    }

    /// `response`'s status and headers, then `len` bytes of `file` from `offset`, sent
    /// socket-ward without a user-space copy.
    pub fn file(response: Response, file: Rc<File>, offset: u64, len: u64) -> Reply {
        Reply {
            response: response.body_follows(BodyFraming::Length(len)),
            source: Source::File { file, offset, len },
        }
    }

    /// `response`'s status and headers, then each item of `stream` as a chunk, written as it
    /// is produced (nothing is buffered whole).
    pub fn stream(response: Response, stream: impl Stream<Item = Bytes> + 'static) -> Reply {
        Reply {
            response: response.body_follows(BodyFraming::Chunked),
            source: Source::Stream(Box::pin(stream)),
        }
    }

    /// The response head.
    pub fn response(&self) -> &Response {
        &self.response
    }
}

/// Answers `req` with the file at `path`: `Content-Length`, `Last-Modified`, `304` for a
/// matching `If-Modified-Since`, a single `Range` (`206`, or `416` when unsatisfiable), `404`
/// when it is missing. The body goes out with splice/sendfile.
pub fn serve_file(req: &Request, path: impl AsRef<Path>) -> Reply {
    let path = path.as_ref();
    let Ok(meta) = std::fs::metadata(path) else {
        return Response::new(404).into();
    };
    if !meta.is_file() {
        return Response::new(404).into();
    }
    let len = meta.len();
    let modified = meta.modified().ok().map(truncate_to_seconds);
    if let (Some(modified), Some(since)) = (modified, req.header("if-modified-since")) {
        let since = std::str::from_utf8(since)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok());
        if since.is_some_and(|since| modified <= since) {
            return Response::new(304).into();
        }
    }
    let mut head = Response::new(200)
        .header("Content-Type", content_type(path))
        .header("Accept-Ranges", "bytes");
    if let Some(m) = modified {
        head = head.header("Last-Modified", httpdate::fmt_http_date(m));
    }
    let (status, offset, count) = match req.header("range") {
        None => (200, 0, len),
        Some(range) => match single_range(range, len) {
            Some((start, end)) => (206, start, end - start + 1),
            None => {
                return Response::new(416)
                    .header("Content-Range", format!("bytes */{len}"))
                    .into();
            }
        },
    };
    let head = if status == 206 {
        let mut partial = Response::new(206);
        for (n, v) in head.headers() {
            partial = partial.header(n.to_string(), Bytes::copy_from_slice(v));
        }
        partial.header(
            "Content-Range",
            format!("bytes {offset}-{}/{len}", offset + count - 1),
        )
    } else {
        head
    };
    match File::open(path) {
        Ok(file) => Reply::file(head, Rc::new(file), offset, count),
        Err(_) => Response::new(404).into(),
    }
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `len` bytes: the inclusive
/// byte range, or `None` when unsatisfiable or not a single range.
fn single_range(value: &[u8], len: u64) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let spec = text.strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            if n == 0 {
                return None;
            }
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("svg") => "image/svg+xml",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::single_range;

    #[test]
    fn ranges() {
        assert_eq!(single_range(b"bytes=0-9", 100), Some((0, 9)));
        assert_eq!(single_range(b"bytes=90-", 100), Some((90, 99)));
        assert_eq!(single_range(b"bytes=-10", 100), Some((90, 99)));
        assert_eq!(single_range(b"bytes=50-500", 100), Some((50, 99)));
        assert_eq!(single_range(b"bytes=100-", 100), None);
        assert_eq!(single_range(b"bytes=5-1", 100), None);
        assert_eq!(single_range(b"bytes=0-1,5-6", 100), None);
        assert_eq!(single_range(b"items=0-1", 100), None);
    }
}
