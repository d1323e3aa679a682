//! The bench suite: `cargo run --release -p coring-benches --bin suite` (`-- --help`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Runs coring and its peers side by side on loopback, each server variant pinned to its own
/// cores and driven by coring-loadgen on the others, and writes report.md, report.json and SVG
/// charts.
///
/// Variants: coring-uring, coring-compat, monoio-uring, monoio-legacy, glommio, tokio-hyper,
/// axum-on-coring, raw-uring, nginx, tokio-tungstenite, fastwebsockets. Workloads: plaintext,
/// json, echo-64, echo-4k, static, ws-echo-20, ws-echo-16k, latency, https, https-1,
/// https-static, tls-handshakes.
#[derive(Debug, Parser)]
#[command(name = "suite")]
struct Args {
    /// About 30 seconds: one short run per pair, no syscall counts.
    #[arg(long)]
    quick: bool,
    /// Server cores per variant (the load generator gets the other allowed CPUs).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Measured period of each run (default 800ms, --quick 500ms).
    #[arg(long, value_parser = coring_loadgen::args::parse_duration)]
    duration: Option<Duration>,
    /// Warm-up before each run (default 200ms, --quick 200ms).
    #[arg(long, value_parser = coring_loadgen::args::parse_duration)]
    warmup: Option<Duration>,
    /// Interleaved runs of every pair; medians are reported (default 3, --quick 1).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these variants and/or workloads (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Leave out these variants and/or workloads (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Output directory.
    #[arg(long, default_value = "target/bench-report")]
    out: PathBuf,
    /// Do not count syscalls per request with strace.
    #[arg(long)]
    no_syscalls: bool,
    /// A bench-server binary to start the variants with (default: this program).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    use coring_benches::servers::VARIANTS;
    use coring_benches::suite::{self, WORKLOADS, report, sys};

    // The suite starts each server variant as `suite bench-server …`: one binary to build.
    let mut argv = std::env::args();
    if argv.nth(1).as_deref() == Some("bench-server") {
        return coring_benches::servers::cli::cli_main(argv);
    }
    let args = Args::parse();
    for name in args.only.iter().chain(&args.skip) {
        if !VARIANTS.contains(&name.as_str()) && !WORKLOADS.iter().any(|w| w.name == name) {
            eprintln!("suite: {name:?} is neither a variant nor a workload (try --help)");
            return ExitCode::from(2);
        }
    }
    let server_cmd = match (&args.server_bin, std::env::current_exe()) {
        (Some(bin), _) => (bin.clone(), Vec::new()),
        (None, Ok(me)) => (me, vec!["bench-server".to_owned()]),
        (None, Err(e)) => {
            eprintln!("suite: cannot find my own executable ({e}); pass --server-bin");
            return ExitCode::from(1);
        }
    };
    let options = suite::SuiteOptions {
        cores: args.cores.max(1),
        duration: args.duration.unwrap_or(if args.quick {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(800)
        }),
        warmup: args.warmup.unwrap_or(Duration::from_millis(200)),
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        only: args.only,
        skip: args.skip,
        out: args.out,
        syscalls: !args.no_syscalls && !args.quick,
        server_cmd,
    };
    let placement = suite::placement(options.cores);
    let (variants, workloads) = suite::selection(&options);
    println!(
        "suite: {} variant(s) × {} workload(s) × {} run(s); servers on CPUs {:?}, load generator on {:?}{}",
        variants.len(),
        workloads.len(),
        options.runs,
        placement.server,
        placement.loadgen,
        if placement.apart { "" } else { " (shared)" }
    );
    let steal0 = sys::cpu_jiffies();
    let measured = match suite::measure(&options, &placement, |line| println!("{line}")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("suite: {e}");
            return ExitCode::from(1);
        }
    };
    let steal_pct = match (steal0, sys::cpu_jiffies()) {
        (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
            Some((s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)
        }
        _ => None,
    };
    let info = report::RunInfo {
        date: httpdate::fmt_http_date(std::time::SystemTime::now()),
        steal_pct,
    };
    let r = report::build(&measured, &options, &placement, &variants, &workloads, info);
    if let Err(e) = report::write(&r, &options.out) {
        eprintln!("suite: {e}");
        return ExitCode::from(1);
    }
    println!("\n{}", report::markdown(&r));
    println!("suite: report in {}", options.out.display());
    ExitCode::SUCCESS
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    let _ = Args::parse();
    eprintln!("suite: the bench suite runs on Linux only");
    ExitCode::from(1)
}
