//! A file server and its client over TCP, with resume.
//!
//! Server (binaries convention: `--addr`, `--cores`, `--driver`, one `listening on HOST:PORT`
//! line, exit 0 on SIGTERM): `file_transfer --root DIR` serves the regular files directly in
//! DIR. A request is one line, `GET NAME OFFSET`; the answer is `OK SIZE` (the whole file's
//! size) and the bytes from OFFSET to the end, sent from the page cache to the socket without
//! passing through user space (`send_file`: splice on io_uring, sendfile on compat), or
//! `ERR REASON`. Names with a path in them, or starting with a dot, are refused, and so is an
//! offset past the end.
//!
//! Client: `file_transfer get HOST:PORT NAME OUT` downloads NAME into OUT. If OUT already has
//! bytes it asks from there on; if the connection drops it connects again and asks from what
//! it has (up to 20 times, one second apart at most), and prints `resumed at OFFSET` each
//! time. It writes OUT with the standard library (one download; the engine has no file
//! writes) and checks the size it ends with.
//!
//! `cargo run --release -p coring-protocols --example file_transfer -- --root . --addr 127.0.0.1:9004`
//! `cargo run --release -p coring-protocols --example file_transfer -- get 127.0.0.1:9004 Cargo.toml /tmp/Cargo.toml`

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coring::fs::File;
use coring::net::{TcpListener, TcpStream};
use coring_cli::ExtraFlag;

const NAME: &str = "file_transfer";
/// The longest request line taken.
const MAX_LINE: usize = 1024;
/// A client has this long to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("get") {
        std::process::exit(client(&argv[2..]));
    }
    let args = coring_cli::server_args_with(
        NAME,
        "file server with resume (zero-copy sends)",
        9004,
        &[ExtraFlag {
            flag: "--root",
            env: "CORING_ROOT",
            value: "DIR",
            help: "the directory whose files are served",
        }],
    );
    let root: PathBuf = match args.extra("--root") {
        Some(dir) if Path::new(dir).is_dir() => dir.into(),
        Some(dir) => coring_cli::bad_flag(NAME, &format!("--root: {dir} is not a directory")),
        None => coring_cli::bad_flag(NAME, "--root DIR is required"),
    };
    let root = Arc::new(root);
    let runtime = coring_cli::server_runtime(NAME, &args);
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind(NAME, &core, args.addr, TcpListener::bind_reuseport, |l| {
            Some(l.local_addr())
        });
        let root = Arc::clone(&root);
        async move {
            let Some(listener) = listener else { return };
            loop {
                let accepted = coring::runtime::until_shutdown(listener.accept()).await;
                let Some(accepted) = accepted else { return };
                match accepted {
                    Ok((stream, _)) => {
                        coring::spawn_local(serve(stream, Arc::clone(&root)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        coring::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    });
    startup.exit(NAME, result);
}

/// Why a request is refused; the client gets the text.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("request line too long or not text")]
    BadLine,
    #[error("not GET NAME OFFSET")]
    BadRequest,
    #[error("names are plain file names")]
    BadName,
    #[error("no such file")]
    NotFound,
    #[error("offset {0} is past the end ({1} bytes)")]
    PastEnd(u64, u64),
}

/// One connection: one request, one answer.
async fn serve(stream: TcpStream, root: Arc<PathBuf>) {
    let line = match coring::time::timeout(REQUEST_DEADLINE, read_line(&stream)).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(refusal)) => return refuse(&stream, refusal).await,
    };
    let (file, size, offset) = match open(&root, &line) {
        Ok(found) => found,
        Err(refusal) => return refuse(&stream, refusal).await,
    };
    let (result, _) = stream.write_all(format!("OK {size}\n").into_bytes()).await;
    if result.is_err() {
        return;
    }
    match stream.send_file(&file, offset, size - offset).await {
        Ok(sent) if sent == size - offset => {}
        Ok(sent) => tracing::warn!(sent, "file shrank while it was sent"),
        Err(e) => tracing::debug!(error = %e, "send stopped"),
    }
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
}

async fn refuse(stream: &TcpStream, refusal: Refusal) {
    let (_, _) = stream
        .write_all(format!("ERR {refusal}\n").into_bytes())
        .await;
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
}

/// The request line (without its newline); `None` if the client went first.
async fn read_line(stream: &TcpStream) -> Result<Option<String>, Refusal> {
    let mut line = Vec::new();
    let mut reader = stream.pooled();
    loop {
        let Ok(Some(buf)) = reader.next().await else {
            return Ok(None);
        };
        line.extend_from_slice(&buf);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            return String::from_utf8(line)
                .map(Some)
                .map_err(|_| Refusal::BadLine);
        }
        if line.len() > MAX_LINE {
            return Err(Refusal::BadLine);
        }
    }
}

/// The file a request names, its size, and where to start.
fn open(root: &Path, line: &str) -> Result<(File, u64, u64), Refusal> {
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some("GET"), Some(name), Some(offset), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(Refusal::BadRequest);
    };
    let offset: u64 = offset.parse().map_err(|_| Refusal::BadRequest)?;
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || Path::new(name).components().count() != 1
    {
        return Err(Refusal::BadName);
    }
    let path = root.join(name);
    if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(Refusal::NotFound);
    }
    let file = File::open(&path).map_err(|_| Refusal::NotFound)?;
    let size = file.len().map_err(|_| Refusal::NotFound)?;
    if offset > size {
        return Err(Refusal::PastEnd(offset, size));
    }
    Ok((file, size, offset))
}

/// `get HOST:PORT NAME OUT`; the process's exit status.
fn client(args: &[String]) -> i32 {
    let [addr, name, out] = args else {
        eprintln!("usage: {NAME} get HOST:PORT NAME OUT");
        return 2;
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("{NAME}: {addr} is not HOST:PORT");
        return 2;
    };
    let runtime = match coring::Runtime::builder().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return 1;
        }
    };
    let (name, out) = (name.clone(), PathBuf::from(out));
    runtime.block_on(download(addr, name, out))
}

/// How one attempt ended.
enum Attempt {
    Done,
    /// The connection ended early: go again from what we have.
    Dropped,
    Failed(String),
}

async fn download(addr: SocketAddr, name: String, out: PathBuf) -> i32 {
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{NAME}: {}: {e}", out.display());
            return 1;
        }
    };
    let mut tries = 0;
    loop {
        let have = file.metadata().map_or(0, |m| m.len());
        if tries > 0 || have > 0 {
            println!("resumed at {have}");
        }
        match attempt(addr, &name, have, &mut file).await {
            Attempt::Done => {
                println!("done: {} bytes", file.metadata().map_or(0, |m| m.len()));
                return 0;
            }
            Attempt::Failed(why) => {
                eprintln!("{NAME}: {why}");
                return 1;
            }
            Attempt::Dropped if tries < 20 => {
                tries += 1;
                let wait = Duration::from_millis(50 * (1 << tries.min(4)));
                coring::time::sleep(wait.min(Duration::from_secs(1))).await;
            }
            Attempt::Dropped => {
                eprintln!("{NAME}: the connection kept dropping; giving up");
                return 1;
            }
        }
    }
}

async fn attempt(addr: SocketAddr, name: &str, have: u64, file: &mut std::fs::File) -> Attempt {
    let stream = match coring::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    {
        Ok(Ok(s)) => s,
        _ => return Attempt::Dropped,
    };
    let (result, _) = stream
        .write_all(format!("GET {name} {have}\n").into_bytes())
        .await;
    if result.is_err() {
        return Attempt::Dropped;
    }
    let mut reader = stream.pooled();
    let mut head = Vec::new();
    let mut size = None;
    let mut got = have;
    loop {
        let next = coring::time::timeout(Duration::from_secs(30), reader.next()).await;
        let buf = match next {
            Ok(Ok(Some(buf))) => buf,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        };
        let mut bytes: &[u8] = &buf;
        if size.is_none() {
            head.extend_from_slice(bytes);
            let Some(end) = head.iter().position(|&b| b == b'\n') else {
                if head.len() > MAX_LINE {
                    return Attempt::Failed("the server's answer is not a line".into());
                }
                continue;
            };
            let line = String::from_utf8_lossy(&head[..end]).into_owned();
            match line.strip_prefix("OK ").and_then(|s| s.parse::<u64>().ok()) {
                Some(total) => size = Some(total),
                None => return Attempt::Failed(format!("the server says: {line}")),
            }
            let rest = head.split_off(end + 1);
            if let Err(e) = file.write_all(&rest) {
                return Attempt::Failed(format!("write: {e}"));
            }
            got += rest.len() as u64;
            bytes = &[];
        }
        if let Err(e) = file.write_all(bytes) {
            return Attempt::Failed(format!("write: {e}"));
        }
        got += bytes.len() as u64;
    }
    match size {
        Some(total) if got == total => Attempt::Done,
        Some(total) if got > total => {
            Attempt::Failed(format!("{got} bytes of a {total}-byte file"))
        }
        _ => Attempt::Dropped,
    }
}
