//! The servers the suite compares: coring on either driver, its peers (monoio on io_uring and
//! on epoll, glommio, tokio + hyper) and a hand-written io_uring loop, each answering the same
//! apps with byte-identical responses so that only the engines differ.
//!
//! Apps: `tfb` (`/plaintext`, `/json`, and `/static` when a file is given), `echo` (bytes
//! back as they come) and `ws` (WebSocket echo, served by coring and by the WebSocket peers
//! tokio-tungstenite and fastwebsockets). coring and tokio + hyper use their own HTTP stacks; monoio, glommio and
//! the raw loop share [`respond`], an httparse-based responder like the one their TechEmpower
//! entries use.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::time::SystemTime;

#[cfg(target_os = "linux")]
pub mod axum_coring;
pub mod cli;
#[cfg(target_os = "linux")]
pub mod coring_server;
#[cfg(target_os = "linux")]
pub mod glommio_server;
#[cfg(target_os = "linux")]
pub mod monoio_server;
#[cfg(target_os = "linux")]
pub mod nginx;
#[cfg(target_os = "linux")]
pub mod raw_uring;
#[cfg(target_os = "linux")]
pub mod tokio_hyper;
#[cfg(target_os = "linux")]
pub mod ws_peers;

/// The `Server` header every variant sends.
pub const SERVER_NAME: &str = "tfb";

/// What a server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// TechEmpower plaintext and json (and `/static`).
    Tfb,
    /// TCP echo.
    Echo,
    /// WebSocket echo at `/` (every text and binary message back).
    Ws,
}

impl App {
    /// Its name on the command line and in `unsupported`.
    pub fn name(self) -> &'static str {
        match self {
            App::Tfb => "tfb",
            App::Echo => "echo",
            App::Ws => "ws",
        }
    }
}

/// What the suite starts a server with.
#[derive(Debug)]
pub struct ServerConfig {
    /// One SO_REUSEPORT listener per core, all on this address.
    pub listeners: Vec<std::net::TcpListener>,
    /// The app.
    pub app: App,
    /// The file served at `/static`.
    pub file: Option<PathBuf>,
    /// Serve the app over TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's key.
    pub key: PathBuf,
}

/// The variants with a TLS server (coring with rustls, tokio + hyper with tokio-rustls, nginx
/// with OpenSSL).
pub const TLS_VARIANTS: [&str; 4] = ["coring-uring", "coring-compat", "tokio-hyper", "nginx"];

impl ServerConfig {
    /// Opens the `/static` file for the shared responder, if one was given.
    pub fn static_file(&self) -> Result<Option<std::sync::Arc<StaticFile>>, String> {
        self.file
            .as_deref()
            .map(|p| {
                StaticFile::open(p)
                    .map(std::sync::Arc::new)
                    .map_err(|e| format!("{}: {e}", p.display()))
            })
            .transpose()
    }
}

/// Runs `serve_one` on a thread of its own for each listener and waits for them all: the
/// shape every peer variant shares (one runtime per core thread).
pub fn thread_per_listener<F>(
    listeners: Vec<std::net::TcpListener>,
    serve_one: F,
) -> Result<(), String>
where
    F: Fn(std::net::TcpListener) -> Result<(), String> + Clone + Send + 'static,
{
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let serve_one = serve_one.clone();
            std::thread::spawn(move || serve_one(listener))
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "server thread panicked".to_string())??;
    }
    Ok(())
}

/// Binds `cores` SO_REUSEPORT listeners on `addr` (port 0: the first picks a port and the
/// others share it).
pub fn bind_listeners(
    addr: SocketAddr,
    cores: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut addr = addr;
    let mut out = Vec::with_capacity(cores);
    for _ in 0..cores {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_tcp_nodelay(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        out.push(l);
    }
    Ok(out)
}

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// The current `Date` value (IMF-fixdate), re-rendered once per second per thread.
pub fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let s = httpdate::fmt_http_date(now);
            text.copy_from_slice(&s.as_bytes()[..29]);
            *at = secs;
        }
        f(&text[..])
    })
}

/// Writes one response head (the same bytes coring's server writes) and `body`.
pub fn write_response(out: &mut Vec<u8>, status: &str, content_type: &str, body: &[u8]) {
    write_head(out, status, content_type, body.len() as u64);
    out.extend_from_slice(body);
}

/// Writes a response head announcing a `len`-byte body.
pub fn write_head(out: &mut Vec<u8>, status: &str, content_type: &str, len: u64) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(SERVER_NAME.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    with_date(|d| out.extend_from_slice(d));
    if !content_type.is_empty() {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(content_type.as_bytes());
    }
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// The JSON body, serialised per request as the TechEmpower rules ask.
pub fn json_body() -> Vec<u8> {
    serde_json::to_vec(&crate::Message {
        message: "Hello, World!",
    })
    .unwrap_or_default()
}

/// The shared responder's file.
#[derive(Debug)]
pub struct StaticFile {
    file: File,
    len: u64,
}

impl StaticFile {
    /// Opens `path`.
    pub fn open(path: &std::path::Path) -> std::io::Result<StaticFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(StaticFile { file, len })
    }
}

/// The request could not be answered; the connection should close.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Answers every complete request at the front of `input`, appending the responses to `out`;
/// returns how many input bytes they used. Requests with a body are refused (`Malformed`).
/// `/static` is read from `file` (`pread`) into `out`.
pub fn respond(
    input: &[u8],
    out: &mut Vec<u8>,
    file: Option<&StaticFile>,
) -> Result<usize, Malformed> {
    let mut used = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&input[used..]) {
            Ok(httparse::Status::Complete(n)) => {
                let has_body = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("transfer-encoding")
                        || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                });
                if has_body {
                    return Err(Malformed);
                }
                match (req.path.unwrap_or(""), file) {
                    ("/plaintext", _) => {
                        write_response(out, "200 OK", "text/plain", crate::PLAINTEXT)
                    }
                    ("/json", _) => write_response(out, "200 OK", "application/json", &json_body()),
                    ("/static", Some(f)) => {
                        write_head(out, "200 OK", "application/octet-stream", f.len);
                        let start = out.len();
                        out.resize(start + f.len as usize, 0);
                        f.file
                            .read_exact_at(&mut out[start..], 0)
                            .map_err(|_| Malformed)?;
                    }
                    _ => write_response(out, "404 Not Found", "", b""),
                }
                used += n;
            }
            Ok(httparse::Status::Partial) => {
                if input.len() - used > 8192 {
                    return Err(Malformed);
                }
                return Ok(used);
            }
            Err(_) => return Err(Malformed),
        }
    }
}

/// The names of every variant, in the order the suite runs them.
pub const VARIANTS: [&str; 11] = [
    "coring-uring",
    "coring-compat",
    "monoio-uring",
    "monoio-legacy",
    "glommio",
    "tokio-hyper",
    "axum-on-coring",
    "raw-uring",
    "nginx",
    "tokio-tungstenite",
    "fastwebsockets",
];

/// Why `variant` does not take part in workload `workload` (of app `app`), if it does not.
pub fn unsupported(variant: &str, app: &str, workload: &str) -> Option<&'static str> {
    const WS_PEERS: [&str; 2] = ["tokio-tungstenite", "fastwebsockets"];
    match (variant, app, workload) {
        (v, "https", _) if !TLS_VARIANTS.contains(&v) => Some("no TLS server in this variant"),
        (_, "https", _) => None,
        (v, "tfb" | "echo", _) if WS_PEERS.contains(&v) => Some("a WebSocket library only"),
        ("coring-uring" | "coring-compat", "ws", _) => None,
        (v, "ws", _) if !WS_PEERS.contains(&v) => Some("no WebSocket server in this variant"),
        ("nginx", "echo", _) => Some("nginx does not echo raw TCP"),
        ("axum-on-coring", "echo", _) => Some("an HTTP framework only"),
        ("nginx", _, "json") => {
            Some("nginx has no JSON serialiser (it joins plaintext and static)")
        }
        _ => None,
    }
}

/// Runs variant `name` on `config` until the process is stopped.
pub fn serve(name: &str, config: ServerConfig) -> Result<(), String> {
    if let Some(why) = unsupported(name, config.app.name(), "") {
        return Err(format!("{name} cannot serve {}: {why}", config.app.name()));
    }
    if config.tls.is_some() && (!TLS_VARIANTS.contains(&name) || config.app != App::Tfb) {
        return Err(format!(
            "{name} has no TLS server for {}",
            config.app.name()
        ));
    }
    #[cfg(target_os = "linux")]
    {
        use coring::driver::probe::DriverChoice;
        match name {
            "coring-uring" => coring_server::serve(config, DriverChoice::Uring),
            "coring-compat" => coring_server::serve(config, DriverChoice::Compat),
            "monoio-uring" => monoio_server::serve(config, monoio_server::Driver::Uring),
            "monoio-legacy" => monoio_server::serve(config, monoio_server::Driver::Legacy),
            "glommio" => glommio_server::serve(config),
            "tokio-hyper" => tokio_hyper::serve(config),
            "axum-on-coring" => axum_coring::serve(config),
            "raw-uring" => raw_uring::serve(config),
            "nginx" => nginx::serve(config),
            "tokio-tungstenite" => ws_peers::serve(config, ws_peers::Peer::TokioTungstenite),
            "fastwebsockets" => ws_peers::serve(config, ws_peers::Peer::FastWebSockets),
            other => Err(format!("unknown variant {other:?}")),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = config;
        Err(format!("{name}: the suite's servers run on Linux only"))
    }
}

/// Prints the ready line of the binaries convention.
pub fn announce(addr: SocketAddr) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_answers_pipelined_requests_in_order() {
        let input = b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\nGET /json HTTP/1.1\r\nHost: a\r\n\r\nGET /pl";
        let mut out = Vec::new();
        let used = respond(input, &mut out, None).unwrap();
        assert_eq!(&input[used..], b"GET /pl");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.matches("HTTP/1.1 200 OK\r\nServer: tfb\r\nDate: ")
                .count(),
            2
        );
        assert!(
            text.contains("Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!")
        );
        assert!(text.ends_with("Content-Length: 27\r\n\r\n{\"message\":\"Hello, World!\"}"));
        let body = b"POST /json HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        assert!(respond(body, &mut Vec::new(), None).is_err());
    }
}
