//! Restarting a server without dropping a connection (Unix).
//!
//! The running process (the *predecessor*) starts a new copy of its own executable with the
//! same arguments (the *successor*) and hands it every socket [offered](offer) here, over a
//! Unix socket pair with `SCM_RIGHTS`: the very sockets, with the connections already waiting
//! in their queues, not new ones bound to the same address. The successor adopts them
//! ([`Inherited::take`]) instead of binding, says it is [ready](Inherited::ready), and from then
//! on both accept from the same queues until the predecessor stops accepting
//! ([`Incoming::close`](crate::net::Incoming::close), which loses nothing the kernel had already
//! accepted for it), drains its connections and exits. A client sees no refused connection
//! and no reset at any point.
//!
//! ```no_run
//! # fn main() -> coring::Result<()> {
//! let runtime = coring::Runtime::builder().build()?;
//! runtime.shutdown_on_signals()?;
//! // SIGHUP: start a successor, hand it the offered sockets, and once it is ready shut
//! // this runtime down gracefully.
//! runtime.restart_on_hangup()?;
//! # Ok(()) }
//! ```
//!
//! Binaries that follow the convention (`coring-cli`) do all of this for each core's listener
//! and their `--pid-file` (whose lock passes to the successor with the descriptor).
//!
//! The hand-over, over the pair the successor inherits as `CORING_RESTART_FD`:
//!
//! 1. predecessor → successor: a 4-byte big-endian length, then text, `coring-restart 1` and
//!    one line per descriptor attached to the message, in order: `tcp REQUESTED BOUND`,
//!    `udp REQUESTED BOUND`, or `file NAME`;
//! 2. successor → predecessor: `ready\n` once it serves; closing the pair without it (the
//!    successor failed) leaves the predecessor serving as before.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::net::{TcpListener, UdpSocket};
use crate::sys::fds::{MAX_FDS, recv_blocking, send_blocking};

/// The environment variable that names the successor's end of the hand-over pair.
pub const ENV_FD: &str = "CORING_RESTART_FD";

/// How long a predecessor waits for its successor to say it is ready before giving up on it
/// (and killing it).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The first line of a hand-over message.
const MAGIC: &str = "coring-restart 1";

/// What kind of socket a hand-over entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A TCP listener.
    Tcp,
    /// A bound UDP socket.
    Udp,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
        }
    }
}

/// A socket a successor can adopt in place of binding its own.
pub trait Handed: AsFd + Sized {
    /// Its kind in the hand-over.
    const KIND: Kind;
    /// Wraps a handed-over descriptor (on the current core).
    fn adopt(fd: OwnedFd) -> crate::Result<Self>;
    /// Its bound address.
    fn bound(&self) -> std::io::Result<SocketAddr>;
}

impl Handed for TcpListener {
    const KIND: Kind = Kind::Tcp;

    fn adopt(fd: OwnedFd) -> crate::Result<Self> {
        TcpListener::from_fd(fd)
    }

    fn bound(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr())
    }
}

impl Handed for UdpSocket {
    const KIND: Kind = Kind::Udp;

    fn adopt(fd: OwnedFd) -> crate::Result<Self> {
        UdpSocket::from_fd(fd)
    }

    fn bound(&self) -> std::io::Result<SocketAddr> {
        self.local_addr().map_err(std::io::Error::other)
    }
}

/// What one descriptor in a hand-over is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Label {
    Socket {
        kind: Kind,
        /// The address the program asked for (port 0 included).
        requested: SocketAddr,
        bound: SocketAddr,
    },
    File(String),
}

impl Label {
    fn line(&self) -> String {
        match self {
            Label::Socket {
                kind,
                requested,
                bound,
            } => format!("{} {requested} {bound}", kind.word()),
            Label::File(name) => format!("file {name}"),
        }
    }

    fn parse(line: &str) -> Option<Label> {
        let mut words = line.split(' ');
        let socket = |kind, words: &mut std::str::Split<'_, char>| {
            Some(Label::Socket {
                kind,
                requested: words.next()?.parse().ok()?,
                bound: words.next()?.parse().ok()?,
            })
        };
        let label = match words.next()? {
            "tcp" => socket(Kind::Tcp, &mut words)?,
            "udp" => socket(Kind::Udp, &mut words)?,
            "file" => Label::File(words.next()?.to_owned()),
            _ => return None,
        };
        words.next().is_none().then_some(label)
    }
}

struct Entry {
    id: u64,
    label: Label,
    fd: OwnedFd,
}

/// Everything offered to a successor, by this process.
static OFFERED: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A socket or file on offer to the next successor; dropping it withdraws the offer (and
/// closes the duplicate kept for it).
#[derive(Debug)]
#[must_use = "dropping it withdraws the offer"]
pub struct Offered {
    id: u64,
}

impl Drop for Offered {
    fn drop(&mut self) {
        let mut offered = OFFERED.lock().unwrap_or_else(|e| e.into_inner());
        offered.retain(|e| e.id != self.id);
    }
}

fn offer_entry(label: Label, fd: BorrowedFd<'_>) -> std::io::Result<Offered> {
    let fd = fd.try_clone_to_owned()?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut offered = OFFERED.lock().unwrap_or_else(|e| e.into_inner());
    if offered.len() >= MAX_FDS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("at most {MAX_FDS} descriptors can be handed over"),
        ));
    }
    offered.push(Entry { id, label, fd });
    Ok(Offered { id })
}

/// Offers `socket`, bound for `requested` (the address the program asked for, which a
/// successor with the same arguments asks for again), to the next successor. Keep the
/// returned value as long as the socket serves.
pub fn offer<S: Handed>(socket: &S, requested: SocketAddr) -> std::io::Result<Offered> {
    let label = Label::Socket {
        kind: S::KIND,
        requested,
        bound: socket.bound()?,
    };
    offer_entry(label, socket.as_fd())
}

/// Offers an open file under `name` (a word: no spaces), such as a pid file whose lock the
/// successor takes over with it.
pub fn offer_file(name: &str, fd: BorrowedFd<'_>) -> std::io::Result<Offered> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a handed-over file's name is one word",
        ));
    }
    offer_entry(Label::File(name.to_owned()), fd)
}

/// What this process was handed by the one it replaces, if it was started as a successor.
pub struct Inherited {
    entries: Mutex<Vec<(Label, OwnedFd)>>,
    channel: Mutex<Option<StdUnixStream>>,
}

impl std::fmt::Debug for Inherited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Inherited")
            .field(
                "entries",
                &entries.iter().map(|(l, _)| l.line()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What this process inherited: read from the predecessor once, on the first call. A process
/// not started by a restart inherits nothing. An error says the hand-over was announced
/// (`CORING_RESTART_FD` is set) but could not be read; such a process should exit, and its
/// predecessor goes on serving.
pub fn inherited() -> Result<&'static Inherited, String> {
    static INHERITED: OnceLock<Result<Inherited, String>> = OnceLock::new();
    INHERITED
        .get_or_init(read_inheritance)
        .as_ref()
        .map_err(Clone::clone)
}

fn read_inheritance() -> Result<Inherited, String> {
    let none = Inherited {
        entries: Mutex::new(Vec::new()),
        channel: Mutex::new(None),
    };
    let Some(value) = std::env::var_os(ENV_FD) else {
        return Ok(none);
    };
    let raw: i32 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| format!("{ENV_FD}={value:?} is not a descriptor"))?;
    // SAFETY: fstat on any number is harmless; it tells whether `raw` is an open socket.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is a valid place for fstat to write.
    let is_socket = unsafe { libc::fstat(raw, &mut stat) } == 0
        && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK;
    if !is_socket {
        return Err(format!("{ENV_FD}={raw} is not an open socket"));
    }
    // SAFETY: the predecessor left descriptor `raw` open for this process alone (it closed its
    // own copy after starting us), and this runs once (a OnceLock), so nothing else owns it.
    let channel = unsafe { StdUnixStream::from_raw_fd(raw) };
    // SAFETY: fcntl on a descriptor we own; close-on-exec, so our own successor's children
    // do not inherit it.
    unsafe { libc::fcntl(channel.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    channel
        .set_read_timeout(Some(READY_TIMEOUT))
        .map_err(|e| format!("restart: {e}"))?;
    let (text, fds) = receive_message(&channel).map_err(|e| format!("restart: {e}"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err("restart: the predecessor speaks another hand-over".into());
    }
    let labels: Vec<Label> = lines
        .map(|l| Label::parse(l).ok_or_else(|| format!("restart: bad hand-over line {l:?}")))
        .collect::<Result<_, _>>()?;
    if labels.len() != fds.len() {
        return Err(format!(
            "restart: {} descriptors came for {} entries",
            fds.len(),
            labels.len()
        ));
    }
    let entries = labels.into_iter().zip(fds).collect();
    Ok(Inherited {
        entries: Mutex::new(entries),
        channel: Mutex::new(Some(channel)),
    })
}

/// Reads one length-prefixed message and the descriptors that came with it.
fn receive_message(channel: &StdUnixStream) -> std::io::Result<(String, Vec<OwnedFd>)> {
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if bytes.len() >= 4 {
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if len > 1 << 20 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "hand-over message over 1 MiB",
                ));
            }
            if bytes.len() >= 4 + len {
                let text = String::from_utf8(bytes[4..4 + len].to_vec()).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "hand-over not UTF-8")
                })?;
                return Ok((text, fds));
            }
        }
        let (n, got) = recv_blocking(channel.as_fd(), &mut chunk, MAX_FDS)?;
        fds.extend(got);
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

impl Inherited {
    /// Whether this process was started by a restart.
    pub fn is_restart(&self) -> bool {
        self.channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
            || !self
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// A handed-over socket of `S`'s kind for `addr` (matched against the address the
    /// predecessor asked for and the one it got, so a program asked for port 0 finds the port
    /// its predecessor was given), adopted on the current core; `None` when there is none left.
    pub fn take<S: Handed>(&self, addr: SocketAddr) -> Option<crate::Result<S>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = entries.iter().position(|(label, _)| {
            matches!(label, Label::Socket { kind, requested, bound }
                if *kind == S::KIND && (*requested == addr || *bound == addr))
        })?;
        let (_, fd) = entries.remove(i);
        Some(S::adopt(fd))
    }

    /// How many handed-over sockets of `kind` bound to `bound` are still to be taken.
    pub fn remaining(&self, kind: Kind, bound: SocketAddr) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|(label, _)| {
                matches!(label, Label::Socket { kind: k, bound: b, .. } if *k == kind && *b == bound)
            })
            .count()
    }

    /// The file handed over under `name`, if any.
    pub fn take_file(&self, name: &str) -> Option<OwnedFd> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = entries
            .iter()
            .position(|(label, _)| matches!(label, Label::File(n) if n == name))?;
        Some(entries.remove(i).1)
    }

    /// Tells the predecessor this process serves, so that it stops accepting and drains.
    /// Sockets handed over and not taken are closed (a warning names them): take every one
    /// first, or connections queued on them are lost. Does nothing after the first call, or
    /// in a process that was not started by a restart.
    pub fn ready(&self) -> std::io::Result<()> {
        let Some(mut channel) = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let left: Vec<String> = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .filter(|(label, _)| matches!(label, Label::Socket { .. }))
            .map(|(label, _)| label.line())
            .collect();
        if !left.is_empty() {
            tracing::warn!(sockets = ?left, "restart: handed-over sockets nobody took are closed");
        }
        channel.write_all(b"ready\n")
    }
}

/// A successor that said it is ready.
#[derive(Debug)]
pub struct Successor {
    /// Its process id.
    pub pid: u32,
}

/// The executable and arguments a successor is started with: this process's own, as they
/// were when first asked (so a binary replaced on disk since is the one started).
fn command_line() -> &'static (Option<PathBuf>, Vec<std::ffi::OsString>) {
    static LINE: OnceLock<(Option<PathBuf>, Vec<std::ffi::OsString>)> = OnceLock::new();
    LINE.get_or_init(|| {
        let exe = std::env::current_exe().ok().map(|p| {
            // Linux names a replaced binary "PATH (deleted)": the path is what to start.
            let text = p.to_string_lossy();
            match text.strip_suffix(" (deleted)") {
                Some(path) => PathBuf::from(path),
                None => p,
            }
        });
        (exe, std::env::args_os().skip(1).collect())
    })
}

/// Starts a successor (this executable, these arguments), hands it every offered socket and
/// file, and waits up to `timeout` for it to say it is ready. On an error the successor is
/// gone (it exited, or was killed when the time ran out) and this process should go on
/// serving.
pub fn spawn_successor(timeout: Duration) -> std::io::Result<Successor> {
    use std::os::unix::process::CommandExt;
    let (exe, args) = command_line();
    let exe = exe
        .clone()
        .ok_or_else(|| std::io::Error::other("this process's executable is not known"))?;
    let (ours, theirs) = StdUnixStream::pair()?;
    let theirs_raw = theirs.as_raw_fd();
    let mut command = std::process::Command::new(&exe);
    command.args(args).env(ENV_FD, theirs_raw.to_string());
    // SAFETY: the closure runs in the child between fork and exec and makes only fcntl, which
    // is async-signal-safe; it clears close-on-exec on the successor's end of the pair.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(theirs_raw, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(theirs);
    let pid = child.id();
    let outcome = hand_over(&ours, timeout);
    match outcome {
        Ok(()) => Ok(Successor { pid }),
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            Err(std::io::Error::new(
                e.kind(),
                match status {
                    Ok(s) => format!("the new process ({pid}) {s} before it was ready: {e}"),
                    Err(_) => format!("the new process ({pid}) failed: {e}"),
                },
            ))
        }
    }
}

/// Sends the offered descriptors over `channel` and waits for `ready`.
fn hand_over(channel: &StdUnixStream, timeout: Duration) -> std::io::Result<()> {
    let message = {
        let offered = OFFERED.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from(MAGIC);
        for e in offered.iter() {
            text.push('\n');
            text.push_str(&e.label.line());
        }
        let fds: Vec<OwnedFd> = offered
            .iter()
            .map(|e| e.fd.try_clone())
            .collect::<std::io::Result<_>>()?;
        (text, fds)
    };
    let (text, fds) = message;
    let mut bytes = (text.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    send_blocking(channel.as_fd(), &bytes, &borrowed)?;
    drop(fds);
    let deadline = Instant::now() + timeout;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64];
    let mut reader = channel;
    while !answer.ends_with(b"\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no ready word in time",
            ));
        }
        channel.set_read_timeout(Some(left))?;
        match reader.read(&mut chunk) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if answer.len() > 64 {
            break;
        }
    }
    if answer == b"ready\n" {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the new process answered {:?}",
                String::from_utf8_lossy(&answer)
            ),
        ))
    }
}

/// On every SIGHUP, [`spawn_successor`]; once one is ready, `then` runs (a graceful shutdown
/// of this process) and later SIGHUPs are ignored. A restart that fails is logged and this
/// process goes on serving; a SIGHUP during a restart waits for it.
pub(crate) fn on_hangup(then: impl Fn() + Send + 'static) -> crate::Result<()> {
    // Known now, before the binary on disk can change.
    let _ = command_line();
    let mut handed_over = false;
    crate::sys::signal::on_hangup(move || {
        if handed_over {
            tracing::info!("restart: already handed over; this process is draining");
            return;
        }
        match spawn_successor(READY_TIMEOUT) {
            Ok(s) => {
                tracing::info!(pid = s.pid, "restart: the new process serves; draining");
                handed_over = true;
                then();
            }
            Err(e) => {
                tracing::error!(error = %e, "restart failed; still serving");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{Kind, Label};

    #[test]
    fn labels_read_back_as_written() {
        for label in [
            Label::Socket {
                kind: Kind::Tcp,
                requested: "127.0.0.1:0".parse().unwrap(),
                bound: "127.0.0.1:8080".parse().unwrap(),
            },
            Label::Socket {
                kind: Kind::Udp,
                requested: "[::]:9000".parse().unwrap(),
                bound: "[::]:9000".parse().unwrap(),
            },
            Label::File("pid-file".into()),
        ] {
            assert_eq!(Label::parse(&label.line()), Some(label));
        }
        for bad in [
            "tcp 1.2.3.4:5",
            "udp x y",
            "file",
            "file a b",
            "sctp 1.1.1.1:1 1.1.1.1:1",
            "",
        ] {
            assert_eq!(Label::parse(bad), None, "{bad:?}");
        }
    }
}
