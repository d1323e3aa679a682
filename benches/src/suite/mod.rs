//! The bench suite: every server variant on its own pinned cores, driven by the load generator
//! on the others, repeated and interleaved, validated first, reported as ratios.
//!
//! `cargo run --release -p coring-benches --bin suite` (see `--help`).

pub mod report;
pub mod sys;
pub mod validate;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coring_loadgen::echo::TcpEcho;
use coring_loadgen::http::{Http, HttpSpec};
use coring_loadgen::run::{Options, Workload as LoadWorkload, run};
use coring_loadgen::ws::WsEcho;

use crate::servers::VARIANTS;

/// The variant every ratio is taken against.
pub const BASELINE: &str = "coring-uring";

/// The header fields TechEmpower's load generator sends with every request (besides `Host`,
/// which the load generator writes): every HTTP workload sends them too, so the servers parse
/// what users' benchmarks make them parse, not a lighter request.
pub const TFB_HEADERS: [(&str, &str); 2] = [
    (
        "Accept",
        "text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7",
    ),
    ("Connection", "keep-alive"),
];

/// Size of the file the `static` workload serves.
pub const STATIC_BYTES: usize = 1024 * 1024;

/// How the suite runs.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Server cores per variant.
    pub cores: usize,
    /// Measured period of each run.
    pub duration: Duration,
    /// Warm-up before each measured period.
    pub warmup: Duration,
    /// Interleaved repetitions of every (workload, variant) pair.
    pub runs: usize,
    /// Variants and workloads to run (empty: all).
    pub only: Vec<String>,
    /// Variants and workloads to leave out.
    pub skip: Vec<String>,
    /// Where the report goes.
    pub out: PathBuf,
    /// Count syscalls per request with strace on a short fixed-count run.
    pub syscalls: bool,
    /// The command that starts a server variant: the `bench-server` binary, or this program
    /// with its `bench-server` argument.
    pub server_cmd: (PathBuf, Vec<String>),
}

/// What the load generator sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Traffic {
    /// HTTP GETs of `path`, `pipeline` in flight per connection.
    Http {
        /// Request path.
        path: &'static str,
        /// Requests in flight per connection.
        pipeline: usize,
        /// Open model at this many requests per second per server core.
        rate_per_core: Option<f64>,
        /// Over TLS, and how.
        tls: TlsUse,
    },
    /// TCP echo of `size`-byte messages.
    Echo {
        /// Message size.
        size: usize,
    },
    /// WebSocket echo of `size`-byte binary messages, one in flight per connection.
    Ws {
        /// Message size.
        size: usize,
    },
}

/// Whether, and how, an HTTP workload runs over TLS (1.3, ECDSA P-256 certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsUse {
    /// Plain TCP.
    None,
    /// One handshake per connection, then keep-alive requests.
    KeepAlive,
    /// One full handshake per request: `Connection: close`, no session resumption.
    Handshakes,
}

/// One workload of the suite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkloadDef {
    /// Name in reports.
    pub name: &'static str,
    /// What the load generator sends.
    pub traffic: Traffic,
    /// Connections per server core.
    pub connections_per_core: usize,
    /// Requests of the strace run.
    pub syscall_requests: u64,
}

impl WorkloadDef {
    fn app(&self) -> &'static str {
        match self.traffic {
            Traffic::Http {
                tls: TlsUse::None, ..
            } => "tfb",
            Traffic::Http { .. } => "https",
            Traffic::Echo { .. } => "echo",
            Traffic::Ws { .. } => "ws",
        }
    }
}

/// Every workload, in the order they run. Connection counts follow TechEmpower's per-core
/// scale on a small machine: many pipelined connections for plaintext, fewer for json. The
/// WebSocket ones are the shapes fastwebsockets publishes: 100 connections × 20-byte messages
/// and 500 × 16 KiB.
pub const WORKLOADS: [WorkloadDef; 12] = [
    WorkloadDef {
        name: "plaintext",
        traffic: Traffic::Http {
            path: "/plaintext",
            pipeline: 16,
            rate_per_core: None,
            tls: TlsUse::None,
        },
        connections_per_core: 256,
        syscall_requests: 50_000,
    },
    WorkloadDef {
        name: "json",
        traffic: Traffic::Http {
            path: "/json",
            pipeline: 1,
            rate_per_core: None,
            tls: TlsUse::None,
        },
        connections_per_core: 64,
        syscall_requests: 10_000,
    },
    WorkloadDef {
        name: "echo-64",
        traffic: Traffic::Echo { size: 64 },
        connections_per_core: 64,
        syscall_requests: 10_000,
    },
    WorkloadDef {
        name: "echo-4k",
        traffic: Traffic::Echo { size: 4096 },
        connections_per_core: 64,
        // Counted on echo-64: the same calls per message, whatever their size.
        syscall_requests: 0,
    },
    WorkloadDef {
        name: "static",
        traffic: Traffic::Http {
            path: "/static",
            pipeline: 1,
            rate_per_core: None,
            tls: TlsUse::None,
        },
        connections_per_core: 16,
        syscall_requests: 500,
    },
    WorkloadDef {
        name: "ws-echo-20",
        traffic: Traffic::Ws { size: 20 },
        connections_per_core: 100,
        syscall_requests: 10_000,
    },
    WorkloadDef {
        name: "ws-echo-16k",
        traffic: Traffic::Ws { size: 16 << 10 },
        connections_per_core: 500,
        syscall_requests: 0,
    },
    WorkloadDef {
        name: "latency",
        traffic: Traffic::Http {
            path: "/plaintext",
            pipeline: 1,
            rate_per_core: Some(40_000.0),
            tls: TlsUse::None,
        },
        connections_per_core: 64,
        syscall_requests: 0,
    },
    WorkloadDef {
        name: "https",
        traffic: Traffic::Http {
            path: "/plaintext",
            pipeline: 16,
            rate_per_core: None,
            tls: TlsUse::KeepAlive,
        },
        connections_per_core: 256,
        syscall_requests: 20_000,
    },
    WorkloadDef {
        name: "https-1",
        traffic: Traffic::Http {
            path: "/plaintext",
            pipeline: 1,
            rate_per_core: None,
            tls: TlsUse::KeepAlive,
        },
        connections_per_core: 64,
        syscall_requests: 0,
    },
    WorkloadDef {
        name: "https-static",
        traffic: Traffic::Http {
            path: "/static",
            pipeline: 1,
            rate_per_core: None,
            tls: TlsUse::KeepAlive,
        },
        connections_per_core: 16,
        syscall_requests: 0,
    },
    WorkloadDef {
        name: "tls-handshakes",
        traffic: Traffic::Http {
            path: "/plaintext",
            pipeline: 1,
            rate_per_core: None,
            tls: TlsUse::Handshakes,
        },
        connections_per_core: 64,
        syscall_requests: 0,
    },
];

/// One measured run of one variant on one workload.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Responses per second.
    pub rps: f64,
    /// Server CPU, percent of one core.
    pub server_cpu_pct: f64,
    /// Load generator CPU, percent of one core.
    pub loadgen_cpu_pct: f64,
    /// Latency percentiles (µs).
    pub p50_us: u64,
    /// 99th percentile (µs).
    pub p99_us: u64,
    /// 99.9th percentile (µs).
    pub p999_us: u64,
    /// Errors of every kind.
    pub errors: u64,
    /// The latency distribution: (percentile, µs).
    pub percentiles: Vec<(f64, u64)>,
}

/// Everything measured, before it is summarised.
#[derive(Debug, Default)]
pub struct Measured {
    /// Samples by (variant, workload).
    pub samples: Vec<((String, String), Sample)>,
    /// Variants that could not be measured, with why, by (variant, workload).
    pub skipped: Vec<((String, String), String)>,
    /// Syscalls per request by (variant, workload).
    pub syscalls: Vec<((String, String), f64)>,
    /// Why syscalls were not counted, if they were not.
    pub syscalls_note: Option<String>,
    /// Pairs whose syscalls could not be counted, and why.
    pub syscalls_failed: Vec<((String, String), String)>,
}

/// The CPUs servers and the load generator run on.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Server CPUs.
    pub server: Vec<usize>,
    /// Load generator CPUs.
    pub loadgen: Vec<usize>,
    /// Whether the two sets are disjoint.
    pub apart: bool,
}

/// Splits the allowed CPUs: the first `cores` for servers, the rest for the load generator.
pub fn placement(cores: usize) -> Placement {
    let cpus = sys::allowed_cpus();
    let cores = cores.clamp(1, cpus.len());
    let server = cpus[..cores].to_vec();
    let rest = cpus[cores..].to_vec();
    let apart = !rest.is_empty();
    Placement {
        server,
        loadgen: if apart { rest } else { cpus },
        apart,
    }
}

/// The variants and workloads the options select.
pub fn selection(options: &SuiteOptions) -> (Vec<&'static str>, Vec<WorkloadDef>) {
    let only_variants: Vec<&String> = options
        .only
        .iter()
        .filter(|o| VARIANTS.contains(&o.as_str()))
        .collect();
    let only_workloads: Vec<&String> = options
        .only
        .iter()
        .filter(|o| WORKLOADS.iter().any(|w| w.name == o.as_str()))
        .collect();
    let variants = VARIANTS
        .into_iter()
        .filter(|v| only_variants.is_empty() || only_variants.iter().any(|o| o == v))
        .filter(|v| !options.skip.iter().any(|s| s == v))
        .collect();
    let workloads = WORKLOADS
        .into_iter()
        .filter(|w| only_workloads.is_empty() || only_workloads.iter().any(|o| *o == w.name))
        .filter(|w| !options.skip.iter().any(|s| s == w.name))
        .collect();
    (variants, workloads)
}

/// A running server variant.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(
        options: &SuiteOptions,
        variant: &str,
        app: &str,
        cpus: &[usize],
        file: &Path,
    ) -> Result<Server, String> {
        let (program, leading) = &options.server_cmd;
        let mut cmd = Command::new(program);
        // `https` is the tfb app over TLS.
        let (app, tls) = match app {
            "https" => ("tfb", true),
            other => (other, false),
        };
        cmd.args(leading)
            .args(["--variant", variant, "--app", app, "--addr", "127.0.0.1:0"])
            .args(["--cores", &options.cores.to_string()])
            .arg("--file")
            .arg(file)
            .env("CORING_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if tls {
            let paths = tls_files(options);
            cmd.arg("--tls-cert")
                .arg(paths.cert)
                .arg("--tls-key")
                .arg(paths.key);
        }
        let cpus = cpus.to_vec();
        // SAFETY: the hook runs between fork and exec and only makes the sched_setaffinity
        // syscall on a bitmask built on its stack from `cpus`, which was allocated before fork.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(move || sys::pin_to(&cpus));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Server { child, addr }),
            None => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                let why = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                Err(format!("did not start: {}", why.trim()))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load(
    workload: &WorkloadDef,
    addr: SocketAddr,
    options: &SuiteOptions,
    lg_cores: usize,
) -> Result<(Arc<dyn LoadWorkload>, Options), String> {
    let mut lg = Options {
        connections: workload.connections_per_core * options.cores,
        cores: lg_cores,
        duration: options.duration,
        warmup: options.warmup,
        timeout: Duration::from_secs(5),
        ..Options::default()
    };
    let w: Arc<dyn LoadWorkload> = match workload.traffic {
        Traffic::Http {
            path,
            pipeline,
            rate_per_core,
            tls,
        } => {
            lg.pipeline = pipeline;
            lg.rate = rate_per_core.map(|r| r * options.cores as f64);
            let spec = match tls {
                TlsUse::None => http_spec(&addr.to_string(), path),
                TlsUse::KeepAlive | TlsUse::Handshakes => {
                    https_spec(addr, path, tls == TlsUse::Handshakes, options)?
                }
            };
            Arc::new(Http::new(spec, pipeline)?)
        }
        Traffic::Echo { size } => {
            lg.pipeline = 1;
            Arc::new(TcpEcho::new(&addr.to_string(), size, 1)?)
        }
        Traffic::Ws { size } => {
            lg.pipeline = 1;
            Arc::new(WsEcho::new(&format!("ws://{addr}/"), size, false, 1)?)
        }
    };
    Ok((w, lg))
}

/// [`http_spec`] over TLS 1.3 to `addr`, trusting the suite's CA; with `handshakes`, one full
/// handshake per request (`Connection: close`, resumption off).
#[cfg(target_os = "linux")]
fn https_spec(
    addr: SocketAddr,
    path: &str,
    handshakes: bool,
    options: &SuiteOptions,
) -> Result<HttpSpec, String> {
    use coring_protocols::tls::rustls;
    let roots =
        coring_protocols::tls::roots_from_pem(tls_files(options).ca).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(coring_protocols::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if handshakes {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let mut spec = http_spec(&format!("localhost:{}", addr.port()), path);
    spec.url = spec.url.replacen("http://", "https://", 1);
    if handshakes {
        for (name, value) in &mut spec.headers {
            if name == "Connection" {
                *value = "close".into();
            }
        }
    }
    spec.tls = Some(Arc::new(config));
    Ok(spec)
}

#[cfg(not(target_os = "linux"))]
fn https_spec(_: SocketAddr, _: &str, _: bool, _: &SuiteOptions) -> Result<HttpSpec, String> {
    Err("TLS workloads run on Linux only".into())
}

/// The suite's TLS files: a CA, and an ECDSA P-256 certificate for `localhost` and 127.0.0.1
/// it signed, with its key (written at the start of a run that has TLS workloads).
#[derive(Clone, Debug)]
struct TlsPaths {
    /// The CA certificate.
    ca: PathBuf,
    /// The server's certificate.
    cert: PathBuf,
    /// The server's key.
    key: PathBuf,
}

fn tls_files(options: &SuiteOptions) -> TlsPaths {
    let dir = options.out.join("tls");
    TlsPaths {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// Makes the suite's CA and server certificate (fresh each run).
#[cfg(target_os = "linux")]
fn write_tls_files(options: &SuiteOptions) -> Result<(), String> {
    let paths = tls_files(options);
    let e = |e: rcgen::Error| format!("certificates: {e}");
    let ca_key = rcgen::KeyPair::generate().map_err(e)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "coring bench CA");
    let ca = ca.self_signed(&ca_key).map_err(e)?;
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .map_err(e)?
        .signed_by(&key, &ca, &ca_key)
        .map_err(e)?;
    let dir = options.out.join("tls");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (path, text) in [
        (&paths.ca, ca.pem()),
        (&paths.cert, leaf.pem()),
        (&paths.key, key.serialize_pem()),
    ] {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn write_tls_files(_: &SuiteOptions) -> Result<(), String> {
    Err("TLS workloads run on Linux only".into())
}

/// TechEmpower's request for `path` on `addr`, and what its answer must be.
fn http_spec(addr: &str, path: &str) -> HttpSpec {
    HttpSpec {
        url: format!("http://{addr}{path}"),
        headers: TFB_HEADERS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        expect_status: Some(200),
        expect_body_bytes: Some(match path {
            "/plaintext" => crate::PLAINTEXT.len() as u64,
            "/static" => STATIC_BYTES as u64,
            _ => crate::servers::json_body().len() as u64,
        }),
        ..HttpSpec::default()
    }
}

/// One measured run.
fn measure_once(
    workload: &WorkloadDef,
    server: &Server,
    options: &SuiteOptions,
    lg_cores: usize,
) -> Result<Sample, String> {
    let (w, lg) = load(workload, server.addr, options, lg_cores)?;
    let server_cpu0 = sys::process_cpu_seconds(server.pid()).ok_or("server gone")?;
    let own_cpu0 = sys::own_cpu_seconds();
    let t0 = Instant::now();
    let outcome = run(w, &lg, |_| {}).map_err(|e| e.to_string())?;
    let wall = t0.elapsed().as_secs_f64();
    let server_cpu = sys::process_cpu_seconds(server.pid()).ok_or("server gone")? - server_cpu0;
    let own_cpu = sys::own_cpu_seconds() - own_cpu0;
    let rec = &outcome.rec;
    let h = &rec.latency;
    let q = |p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let measured = outcome.measured.as_secs_f64();
    Ok(Sample {
        rps: if measured > 0.0 {
            rec.requests as f64 / measured
        } else {
            0.0
        },
        server_cpu_pct: server_cpu / wall * 100.0,
        loadgen_cpu_pct: own_cpu / wall * 100.0,
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        errors: rec.errors.values().sum::<u64>() + rec.dropped,
        percentiles: h
            .iter_quantiles(2)
            .map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to()))
            .collect(),
    })
}

/// Counts the server's syscalls (strace -c -f) over a fixed number of requests.
fn count_syscalls(
    workload: &WorkloadDef,
    server: &Server,
    options: &SuiteOptions,
    lg_cores: usize,
) -> Result<f64, String> {
    let (w, mut lg) = load(workload, server.addr, options, lg_cores)?;
    lg.requests = Some(workload.syscall_requests);
    // A server that stalls under strace (some io_uring runtimes do not survive the attach)
    // must not stall the suite.
    lg.duration = Duration::from_secs(20);
    lg.warmup = Duration::ZERO;
    lg.rate = None;
    let out = options.out.join("strace.tmp");
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(&out)
        .args(["-p", &server.pid().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("strace: {e}"))?;
    // strace attaches to every thread before it starts counting.
    std::thread::sleep(Duration::from_millis(500));
    let outcome = run(w, &lg, |_| {});
    // SAFETY: kill(2) on our own child's pid; SIGINT makes strace detach and write its summary.
    unsafe { libc::kill(strace.id() as libc::pid_t, libc::SIGINT) };
    let _ = strace.wait();
    let outcome = outcome.map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("strace output: {e}"))?;
    let _ = std::fs::remove_file(&out);
    let calls = text
        .lines()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors,] total
            f.get(3)?.parse::<f64>().ok()
        })
        .ok_or("no total in strace's summary")?;
    if outcome.rec.requests < workload.syscall_requests {
        return Err(format!(
            "only {} of {} requests completed under strace",
            outcome.rec.requests, workload.syscall_requests
        ));
    }
    Ok(calls / outcome.rec.requests as f64)
}

/// Runs the suite: validation, interleaved measured runs, syscall counts.
pub fn measure(
    options: &SuiteOptions,
    placement: &Placement,
    mut log: impl FnMut(&str),
) -> Result<Measured, String> {
    std::fs::create_dir_all(&options.out)
        .map_err(|e| format!("cannot create {}: {e}", options.out.display()))?;
    let file = options.out.join("static.bin");
    let content: Vec<u8> = (0..STATIC_BYTES)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &content).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    sys::pin_to(&placement.loadgen).map_err(|e| format!("cannot pin the load generator: {e}"))?;
    let lg_cores = placement.loadgen.len().max(1);
    let (variants, workloads) = selection(options);
    let mut m = Measured::default();

    // Which variants can run which app, and answer it correctly.
    let mut apps: Vec<&str> = workloads.iter().map(WorkloadDef::app).collect();
    apps.sort_unstable();
    apps.dedup();
    if apps.contains(&"https") {
        write_tls_files(options)?;
    }
    let mut broken: Vec<((String, &str), String)> = Vec::new();
    for &variant in &variants {
        if variant == "glommio" && sys::memlock_limit().is_some_and(|l| l < 512 * 1024) {
            for app in ["tfb", "echo", "ws"] {
                broken.push((
                    (variant.into(), app),
                    "RLIMIT_MEMLOCK is below the 512 KiB glommio needs".into(),
                ));
            }
            continue;
        }
        for &app in &apps {
            if let Some(why) = crate::servers::unsupported(variant, app, "") {
                broken.push(((variant.into(), app), why.into()));
                continue;
            }
            let checked =
                Server::start(options, variant, app, &placement.server, &file).and_then(|server| {
                    let result = if app == "https" {
                        validate::https(server.addr, &tls_files(options).ca)
                    } else if variant == "nginx" {
                        validate::nginx(server.addr, &content)
                    } else if app == "tfb" {
                        validate::tfb(server.addr, Some(&content))
                    } else if app == "ws" {
                        validate::ws(server.addr)
                    } else {
                        validate::echo(server.addr)
                    };
                    server.stop();
                    result.map_err(|e| format!("answers wrongly: {e}"))
                });
            if let Err(why) = checked {
                log(&format!("  {variant} ({app}) skipped: {why}"));
                broken.push(((variant.into(), app), why));
            }
        }
    }
    let why_broken = |variant: &str, app: &str| {
        broken
            .iter()
            .find(|((v, a), _)| v == variant && *a == app)
            .map(|(_, why)| why.clone())
    };

    for run_index in 0..options.runs {
        for w in &workloads {
            for &variant in &variants {
                if why_broken(variant, w.app()).is_some() {
                    continue;
                }
                let key = (variant.to_owned(), w.name.to_owned());
                if let Some(why) = crate::servers::unsupported(variant, w.app(), w.name) {
                    if run_index == 0 {
                        m.skipped.push((key, why.into()));
                    }
                    continue;
                }
                let result = Server::start(options, variant, w.app(), &placement.server, &file)
                    .and_then(|mut server| {
                        let sample = measure_once(w, &server, options, lg_cores);
                        let alive = server.alive();
                        server.stop();
                        match (sample, alive) {
                            (Ok(s), true) => Ok(s),
                            (Ok(_), false) => Err("the server exited during the run".into()),
                            (Err(e), _) => Err(e),
                        }
                    });
                match result {
                    Ok(s) => {
                        log(&format!(
                            "  run {} {:<10} {:<14} {:>11.0} req/s  server {:>5.1}%  loadgen {:>5.1}%  p99 {} us{}",
                            run_index + 1,
                            w.name,
                            variant,
                            s.rps,
                            s.server_cpu_pct,
                            s.loadgen_cpu_pct,
                            s.p99_us,
                            if s.errors > 0 {
                                format!("  {} errors", s.errors)
                            } else {
                                String::new()
                            }
                        ));
                        m.samples.push((key, s));
                    }
                    Err(why) => {
                        log(&format!("  {variant} {}: {why}", w.name));
                        m.skipped.push((key, why));
                    }
                }
            }
        }
    }
    for ((variant, app), why) in &broken {
        for w in workloads.iter().filter(|w| w.app() == *app) {
            m.skipped
                .push(((variant.clone(), w.name.to_owned()), why.clone()));
        }
    }

    if !options.syscalls {
        m.syscalls_note = Some("not counted (--no-syscalls)".into());
    } else if !sys::have("strace") {
        m.syscalls_note = Some("not counted: strace is not installed".into());
    } else {
        for w in workloads.iter().filter(|w| w.syscall_requests > 0) {
            for &variant in &variants {
                // nginx serves from worker processes strace would have to follow apart.
                if why_broken(variant, w.app()).is_some()
                    || crate::servers::unsupported(variant, w.app(), w.name).is_some()
                    || variant == "nginx"
                {
                    continue;
                }
                let counted = Server::start(options, variant, w.app(), &placement.server, &file)
                    .and_then(|server| {
                        let r = count_syscalls(w, &server, options, lg_cores);
                        server.stop();
                        r
                    });
                match counted {
                    Ok(per_req) => {
                        log(&format!(
                            "  syscalls {:<10} {:<14} {per_req:.3} per request",
                            w.name, variant
                        ));
                        m.syscalls
                            .push(((variant.to_owned(), w.name.to_owned()), per_req));
                    }
                    Err(e) => {
                        log(&format!("  syscalls {} {variant}: {e}", w.name));
                        m.syscalls_failed
                            .push(((variant.to_owned(), w.name.to_owned()), e));
                    }
                }
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_workloads_send_techempowers_request() {
        let spec = super::http_spec("127.0.0.1:1", "/plaintext");
        let names: Vec<&str> = spec.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Accept", "Connection"]);
        assert!(spec.headers[0].1.starts_with("text/plain,text/html;q=0.9,"));
        assert_eq!(spec.headers[1].1, "keep-alive");
    }
}
