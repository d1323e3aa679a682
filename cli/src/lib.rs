//! The convention every server binary and example follows: the same flags (`--addr`,
//! `--cores`, `--driver`, `--no-pin`, `--help`), the same `CORING_*` environment variables, one
//! `listening on HOST:PORT` line once every core accepts, graceful exit on SIGINT/SIGTERM, a
//! one-line error and status 2 on bad flags.
//!
//! Flags win over `CORING_*` environment variables, which win over a TOML file named by
//! `--config FILE` (or `CORING_CONFIG`), which wins over defaults. The file's keys are the
//! flags' names without their dashes in front (`addr = "127.0.0.1:8080"`, `cores = 2`,
//! `no-pin = true`, `pid-file = "/run/x.pid"`, and a server's own flags likewise); a key it
//! does not know, or a value of the wrong type, is a one-line error and status 2.
//!
//! `--pid-file PATH` (env `CORING_PID_FILE`) makes the binary a single instance: it locks
//! the file (an advisory lock the OS drops when the process ends, however it ends) and writes
//! its pid there; a second instance given the same file says which process holds it and exits
//! 1.
//!
//! SIGHUP (Unix) restarts the binary without dropping a connection: it starts a new copy of
//! its own executable with the same arguments and hands it each core's listening socket (and
//! the `--pid-file` with its lock); the new process prints the same `listening on` line and
//! accepts, and the old one stops accepting, drains and exits 0 (see `coring::restart`). A
//! new process that fails to start leaves the old one serving. The new process needs at least
//! as many cores as the old had listeners.
//!
//! This crate is for binaries: it prints and ends the process (`--help`, bad flags, a core that
//! cannot bind). Libraries embedding the engine configure it through `coring::Builder`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use coring::driver::probe::DriverChoice;

/// The flags of the binaries convention.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// `--addr`.
    pub addr: SocketAddr,
    /// `--cores`.
    pub cores: usize,
    /// `--driver`.
    pub driver: DriverChoice,
    /// Not `--no-pin`.
    pub pin: bool,
    /// `--coalesce-us`: the wake-up coalescing window (`Builder::coalesce_wakeups`), if any.
    pub coalesce: Option<std::time::Duration>,
    /// `--tls-cert` and `--tls-key`, for the servers that take them ([`server_args_tls`]).
    pub tls: Option<TlsFiles>,
    /// The values of a server's own flags ([`server_args_with`]), by flag.
    pub extra: Vec<(&'static str, String)>,
    /// `--config`: the file the values above were read under.
    pub config: Option<PathBuf>,
    /// `--pid-file`: held (locked, with this process's pid in it) for as long as it runs.
    pub pid_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The value given for one of the server's own flags (or its environment variable).
    pub fn extra(&self, flag: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(f, _)| *f == flag)
            .map(|(_, v)| v.as_str())
    }
}

/// A flag a server takes beyond the convention's: `--flag VALUE`, or `env`.
#[derive(Debug, Clone, Copy)]
pub struct ExtraFlag {
    /// `--private-key`.
    pub flag: &'static str,
    /// `CORING_PRIVATE_KEY`.
    pub env: &'static str,
    /// What the value is, for the usage line (`HEX`).
    pub value: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `--tls-cert`: the chain, leaf first.
    pub cert: PathBuf,
    /// `--tls-key`: the leaf's private key.
    pub key: PathBuf,
}

/// Parses `std::env::args` for a server called `name`; prints help and exits 0 on `--help`,
/// prints one line and exits 2 on anything it does not understand.
pub fn server_args(name: &str, about: &str, default_port: u16) -> ServerArgs {
    parse_args(name, about, default_port, false, &[])
}

/// [`server_args`] for a server with flags of its own: each of `extra` takes a value (flag,
/// else environment variable), read with [`ServerArgs::extra`]; checking the value is the
/// server's.
pub fn server_args_with(
    name: &str,
    about: &str,
    default_port: u16,
    extra: &[ExtraFlag],
) -> ServerArgs {
    parse_args(name, about, default_port, false, extra)
}

/// [`server_args`] for a server that also speaks TLS: `--tls-cert PEM --tls-key PEM` (env
/// `CORING_TLS_CERT`, `CORING_TLS_KEY`; both or neither) make it serve TLS on `--addr`.
pub fn server_args_tls(name: &str, about: &str, default_port: u16) -> ServerArgs {
    parse_args(name, about, default_port, true, &[])
}

/// [`server_args_tls`] for a server with flags of its own (see [`server_args_with`]).
pub fn server_args_tls_with(
    name: &str,
    about: &str,
    default_port: u16,
    extra: &[ExtraFlag],
) -> ServerArgs {
    parse_args(name, about, default_port, true, extra)
}

fn parse_args(
    name: &str,
    about: &str,
    default_port: u16,
    takes_tls: bool,
    extra: &[ExtraFlag],
) -> ServerArgs {
    let tls_usage = if takes_tls {
        "--tls-cert PEM     serve TLS with this certificate chain (env CORING_TLS_CERT)\n\
         --tls-key PEM      and this private key (env CORING_TLS_KEY)\n"
    } else {
        ""
    };
    let tls_flags = if takes_tls {
        " [--tls-cert PEM --tls-key PEM]"
    } else {
        ""
    };
    let extra_flags: String = extra
        .iter()
        .map(|e| format!(" [{} {}]", e.flag, e.value))
        .collect();
    let extra_usage: String = extra
        .iter()
        .map(|e| {
            let left = format!("{} {}", e.flag, e.value);
            format!("{left:<18} {} (env {})\n", e.help, e.env)
        })
        .collect();
    let usage = format!(
        "{name}: {about}\n\n\
         usage: {name} [--addr HOST:PORT] [--cores N] [--driver auto|uring|compat] [--no-pin] [--coalesce-us N]{tls_flags}{extra_flags} [--config FILE] [--pid-file PATH]\n\n\
         --addr HOST:PORT   address to listen on; port 0 picks a free port\n\
         \x20                  (env CORING_ADDR; default 127.0.0.1:{default_port})\n\
         --cores N          cores (threads), one listener each with SO_REUSEPORT\n\
         \x20                  (env CORING_CORES; default: every CPU this process may use)\n\
         --driver KIND      auto, uring or compat (env CORING_DRIVER; default auto)\n\
         --no-pin           do not pin core threads to CPUs\n\
         --coalesce-us N    let arrivals gather up to N µs before a sleeping core wakes: less CPU\n\
         \x20                  per packet under load, up to N µs more latency (io_uring on\n\
         \x20                  Linux 6.12+; env CORING_COALESCE_US; default 0, off)\n\
         {tls_usage}\
         {extra_usage}\
         --config FILE      read flags from this TOML file; flags and env win over it (env CORING_CONFIG)\n\
         --pid-file PATH    lock PATH and write the pid there; refuse to start if another\n\
         \x20                  process holds it (env CORING_PID_FILE)\n\
         --help             this text\n\n\
         Prints `listening on HOST:PORT` once every core accepts; SIGINT/SIGTERM drain and exit 0;\n\
         SIGHUP restarts without dropping a connection (a new process takes over the sockets)."
    );
    let env = |k: &str| std::env::var(k).ok();
    let config = config_flag(name).or_else(|| env("CORING_CONFIG").map(PathBuf::from));
    let mut keys = vec![
        "addr",
        "cores",
        "driver",
        "no-pin",
        "coalesce-us",
        "pid-file",
    ];
    if takes_tls {
        keys.extend(["tls-cert", "tls-key"]);
    }
    keys.extend(extra.iter().map(|e| e.flag.trim_start_matches('-')));
    let file = match &config {
        Some(path) => read_config(name, path, &keys),
        None => Vec::new(),
    };
    let from_file = |key: &str| file.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let layered = |var: &str, key: &str| env(var).or_else(|| from_file(key));
    let mut addr =
        layered("CORING_ADDR", "addr").unwrap_or_else(|| format!("127.0.0.1:{default_port}"));
    let mut cores = layered("CORING_CORES", "cores");
    let mut driver = layered("CORING_DRIVER", "driver");
    let mut pin = from_file("no-pin").as_deref() != Some("true");
    let mut coalesce = layered("CORING_COALESCE_US", "coalesce-us");
    let mut pid_file = layered("CORING_PID_FILE", "pid-file");
    let (mut tls_cert, mut tls_key) = if takes_tls {
        (
            layered("CORING_TLS_CERT", "tls-cert"),
            layered("CORING_TLS_KEY", "tls-key"),
        )
    } else {
        (None, None)
    };

    let mut extra_values: Vec<(&'static str, String)> = extra
        .iter()
        .filter_map(|e| layered(e.env, e.flag.trim_start_matches('-')).map(|v| (e.flag, v)))
        .collect();

    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| fail(name, &format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{usage}");
                std::process::exit(0);
            }
            "--addr" => addr = value("--addr"),
            "--cores" => cores = Some(value("--cores")),
            "--driver" => driver = Some(value("--driver")),
            "--no-pin" => pin = false,
            "--coalesce-us" => coalesce = Some(value("--coalesce-us")),
            "--pid-file" => pid_file = Some(value("--pid-file")),
            // Read before the others, so that they override it.
            "--config" => {
                value("--config");
            }
            "--tls-cert" if takes_tls => tls_cert = Some(value("--tls-cert")),
            "--tls-key" if takes_tls => tls_key = Some(value("--tls-key")),
            other => match extra.iter().find(|e| e.flag == other) {
                Some(e) => {
                    let v = value(e.flag);
                    extra_values.retain(|(f, _)| *f != e.flag);
                    extra_values.push((e.flag, v));
                }
                None => fail(name, &format!("unknown argument {other:?} (try --help)")),
            },
        }
    }

    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|_| fail(name, &format!("--addr: {addr:?} is not HOST:PORT")));
    let cores = match cores {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(c) => match c.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => fail(name, &format!("--cores: {c:?} is not a positive number")),
        },
    };
    let driver = match driver {
        None => DriverChoice::Auto,
        Some(d) => DriverChoice::parse(&d).unwrap_or_else(|| {
            fail(
                name,
                &format!("--driver: {d:?} is not auto, uring or compat"),
            )
        }),
    };
    let coalesce = match coalesce {
        None => None,
        Some(us) => match us.parse::<u64>() {
            Ok(0) => None,
            Ok(n) if n <= 1_000_000 => Some(std::time::Duration::from_micros(n)),
            _ => fail(
                name,
                &format!("--coalesce-us: {us:?} is not a number of µs from 0 to 1000000"),
            ),
        },
    };
    let tls = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        (Some(_), None) => fail(name, "--tls-cert needs --tls-key"),
        (None, Some(_)) => fail(name, "--tls-key needs --tls-cert"),
    };
    #[cfg(unix)]
    if let Err(e) = coring::restart::inherited() {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
    let pid_file = pid_file.map(PathBuf::from);
    if let Some(path) = &pid_file {
        hold_pid_file(name, path);
    }
    ServerArgs {
        addr,
        cores,
        driver,
        pin,
        coalesce,
        tls,
        extra: extra_values,
        config,
        pid_file,
    }
}

/// The value of `--config` among the arguments, if any (read first: the file is the lowest
/// layer, under the environment and the other flags).
fn config_flag(name: &str) -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    let mut found = None;
    while let Some(arg) = args.next() {
        if let Some(v) = arg.strip_prefix("--config=") {
            found = Some(PathBuf::from(v));
        } else if arg == "--config" {
            let v = args
                .next()
                .unwrap_or_else(|| fail(name, "--config needs a value"));
            found = Some(PathBuf::from(v));
        }
    }
    found
}

/// The settings of a TOML config file as `(key, value)` text, each key one of `keys`; exits 2
/// with one line on a file that cannot be read or parsed, an unknown key, or a value that is
/// not a string, an integer or a boolean.
fn read_config(name: &str, path: &std::path::Path, keys: &[&str]) -> Vec<(String, String)> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(name, &format!("--config {shown}: {e}")));
    let table: toml::Table = text.parse().unwrap_or_else(|e: toml::de::Error| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or("not TOML").to_owned();
        fail(name, &format!("--config {shown}: {first}"))
    });
    let mut settings = Vec::new();
    for (key, value) in table {
        if !keys.contains(&key.as_str()) {
            fail(
                name,
                &format!(
                    "--config {shown}: unknown key {key:?} (known: {})",
                    keys.join(", ")
                ),
            );
        }
        let text = match (&value, key.as_str()) {
            (toml::Value::Boolean(b), "no-pin") => b.to_string(),
            (toml::Value::String(v), k) if k != "no-pin" => v.clone(),
            (toml::Value::Integer(n), k) if k != "no-pin" => n.to_string(),
            _ => fail(
                name,
                &format!(
                    "--config {shown}: {key} is {} {}, expected {}",
                    if value.type_str().starts_with(['a', 'i']) {
                        "an"
                    } else {
                        "a"
                    },
                    value.type_str(),
                    if key == "no-pin" {
                        "true or false"
                    } else {
                        "a string or a number"
                    }
                ),
            ),
        };
        settings.push((key, text));
    }
    settings
}

/// Locks `path` (creating it) for the rest of the process's life and writes the pid in it;
/// exits 1 with one line when another process holds it.
fn hold_pid_file(name: &str, path: &std::path::Path) {
    use std::io::{Read, Seek};
    static HELD: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let shown = path.display();
    // A restart's new process gets the old one's descriptor, and with it the lock.
    #[cfg(unix)]
    let inherited = coring::restart::inherited()
        .ok()
        .and_then(|i| i.take_file(PID_FILE))
        .map(std::fs::File::from);
    #[cfg(not(unix))]
    let inherited: Option<std::fs::File> = None;
    let mut file = match inherited {
        Some(file) => file,
        None => {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .unwrap_or_else(|e| fail(name, &format!("--pid-file {shown}: {e}")));
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    eprintln!(
                        "{name}: another instance is running (pid {}, holding {shown})",
                        holder.trim()
                    );
                    std::process::exit(1);
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    fail(name, &format!("--pid-file {shown}: {e}"))
                }
            }
            file
        }
    };
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    if let Err(e) = written {
        fail(name, &format!("--pid-file {shown}: {e}"));
    }
    #[cfg(unix)]
    {
        static OFFERED: std::sync::OnceLock<coring::restart::Offered> = std::sync::OnceLock::new();
        match coring::restart::offer_file(PID_FILE, std::os::fd::AsFd::as_fd(&file)) {
            Ok(offered) => {
                let _ = OFFERED.set(offered);
            }
            Err(e) => fail(name, &format!("--pid-file {shown}: {e}")),
        }
    }
    // Held, and so locked, until the process ends.
    let _ = HELD.set(file);
}

/// The name the pid file goes by in a restart's hand-over.
#[cfg(unix)]
const PID_FILE: &str = "pid-file";

/// Prints `NAME: MSG` and exits 2: what a server does with a flag value it cannot use.
pub fn bad_flag(name: &str, msg: &str) -> ! {
    fail(name, msg)
}

fn fail(name: &str, msg: &str) -> ! {
    eprintln!("{name}: {msg}");
    std::process::exit(2);
}

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`); a second call changes nothing.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A runtime for the server binary `name` as `args` ask (signals start a graceful shutdown;
/// SIGHUP, on Unix, a restart),
/// with logging set up ([`init_logging`]); prints one line and exits 1 when that fails.
pub fn server_runtime(name: &str, args: &ServerArgs) -> coring::Runtime {
    init_logging();
    let runtime = coring::Runtime::builder()
        .cores(args.cores)
        .pin(args.pin)
        .driver(args.driver)
        .coalesce_wakeups(args.coalesce)
        .build()
        .and_then(|rt| rt.shutdown_on_signals().map(|()| rt));
    #[cfg(unix)]
    let runtime = runtime.and_then(|rt| rt.restart_on_hangup().map(|()| rt));
    runtime.unwrap_or_else(|e| {
        eprintln!("{name}: {e}");
        std::process::exit(1)
    })
}

/// A socket [`Startup::bind`] makes for each core: one that a restart hands over (Unix), or
/// any socket (elsewhere).
#[cfg(unix)]
pub trait CoreSocket: coring::restart::Handed {}
#[cfg(unix)]
impl<S: coring::restart::Handed> CoreSocket for S {}

/// A socket [`Startup::bind`] makes for each core: one that a restart hands over (Unix), or
/// any socket (elsewhere).
#[cfg(not(unix))]
pub trait CoreSocket {}
#[cfg(not(unix))]
impl<S> CoreSocket for S {}

/// Coordinates the cores at start: core 0 binds first (so port 0 resolves to one real port
/// that the others then share), and the ready line is printed once every core has bound. In a
/// restart's new process, each core adopts a socket the old one handed over instead of
/// binding, and the old one is told to stop once every core serves.
#[derive(Debug)]
pub struct Startup {
    state: Mutex<(Option<SocketAddr>, usize, bool)>,
    cv: Condvar,
    cores: usize,
    /// Each core's socket, on offer to the next restart for as long as the process runs.
    #[cfg(unix)]
    offered: Mutex<Vec<coring::restart::Offered>>,
}

impl Startup {
    /// Coordination for `cores` cores.
    pub fn new(cores: usize) -> Self {
        Startup {
            state: Mutex::new((None, 0, false)),
            cv: Condvar::new(),
            cores,
            #[cfg(unix)]
            offered: Mutex::new(Vec::new()),
        }
    }

    /// Binds `core`'s socket with `bind`: core 0 on `requested`, the others on core 0's real
    /// address (so port 0 means one port for all), and prints the ready line once every core
    /// has bound. In a restart's new process a handed-over socket is adopted instead (the
    /// very socket, with its queue), and the old process is told to stop after the ready
    /// line. On failure, prints one line naming `name` and the core, starts the runtime's
    /// shutdown, and returns `None`.
    pub fn bind<S: CoreSocket>(
        &self,
        name: &str,
        core: &coring::Core,
        requested: SocketAddr,
        bind: impl FnOnce(SocketAddr) -> coring::Result<S>,
        local_addr: impl Fn(&S) -> Option<SocketAddr>,
    ) -> Option<S> {
        let index = core.index();
        let socket = match self.addr_for(index, requested) {
            None => None,
            Some(addr) => match self.adopt_or_bind(index, addr, bind) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("{name}: core {index}: {e}");
                    None
                }
            },
        };
        self.bound(index, socket.as_ref().and_then(&local_addr));
        if socket.is_none() {
            core.shutdown_handle().shutdown();
        }
        socket
    }

    /// A socket handed over for `addr` if there is one, else `bind(addr)`; offered to the
    /// next restart either way.
    #[cfg(unix)]
    fn adopt_or_bind<S: CoreSocket>(
        &self,
        index: usize,
        addr: SocketAddr,
        bind: impl FnOnce(SocketAddr) -> coring::Result<S>,
    ) -> Result<S, String> {
        let inherited = coring::restart::inherited()?;
        let socket = match inherited.take::<S>(addr) {
            Some(adopted) => {
                let socket = adopted.map_err(|e| format!("restart: adopting {addr}: {e}"))?;
                let bound = socket.bound().map_err(|e| e.to_string())?;
                let left = inherited.remaining(S::KIND, bound);
                if index == 0 && left >= self.cores {
                    return Err(format!(
                        "restart: the running process has {} sockets on {bound} and this one                          runs {} cores; give it --cores {} or more",
                        left + 1,
                        self.cores,
                        left + 1
                    ));
                }
                socket
            }
            None => bind(addr).map_err(|e| e.to_string())?,
        };
        let offered = coring::restart::offer(&socket, addr).map_err(|e| e.to_string())?;
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(offered);
        Ok(socket)
    }

    #[cfg(not(unix))]
    fn adopt_or_bind<S: CoreSocket>(
        &self,
        _index: usize,
        addr: SocketAddr,
        bind: impl FnOnce(SocketAddr) -> coring::Result<S>,
    ) -> Result<S, String> {
        bind(addr).map_err(|e| e.to_string())
    }

    /// The address this core should bind: the requested one for core 0, core 0's real
    /// address for the others (waits for it).
    pub fn addr_for(&self, index: usize, requested: SocketAddr) -> Option<SocketAddr> {
        if index == 0 {
            return Some(requested);
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0.is_none() && !st.2 {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.0
    }

    /// Ends the process once `run` has returned `result`: status 0 after a clean drain, 1 when
    /// a core could not bind (already said) or the runtime failed (said here).
    pub fn exit(&self, name: &str, result: coring::Result<()>) -> ! {
        if let Err(e) = result {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
        let failed = self.state.lock().unwrap_or_else(|e| e.into_inner()).2;
        std::process::exit(i32::from(failed));
    }

    /// Core `index` is bound to `addr` (or failed). Prints the ready line after the last one.
    pub fn bound(&self, index: usize, addr: Option<SocketAddr>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match addr {
            Some(a) if index == 0 => st.0 = Some(a),
            None => st.2 = true,
            _ => {}
        }
        st.1 += 1;
        if st.1 == self.cores
            && !st.2
            && let Some(addr) = st.0
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {addr}");
            let _ = out.flush();
            drop(out);
            // Every core serves: the process this one replaces (if any) may stop.
            #[cfg(unix)]
            if let Ok(inherited) = coring::restart::inherited()
                && let Err(e) = inherited.ready()
            {
                eprintln!("restart: telling the old process to stop: {e}");
            }
        }
        self.cv.notify_all();
    }
}
