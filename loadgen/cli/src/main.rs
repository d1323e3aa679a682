//! `coring-loadgen`: see `coring-loadgen --help`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use coring_loadgen::args::parse_header;
use coring_loadgen::broadcast::WsBroadcast;
use coring_loadgen::echo::TcpEcho;
use coring_loadgen::http::{Http, HttpSpec};
use coring_loadgen::netcode::NetcodeEcho;
use coring_loadgen::report::{Report, hgrm};
use coring_loadgen::run::Options;
use coring_loadgen::run::{Progress, Workload, run};
use coring_loadgen::udp::UdpEcho;
use coring_loadgen::ws::WsEcho;

use cli::{Cli, Common, WorkloadCmd};

mod cli;
mod plot;

/// Datagrams per second of `udp-echo` when `--rate` is not given.
const DEFAULT_UDP_RATE: f64 = 10_000.0;
/// A game client's send rate: one input per 60 Hz frame.
const NETCODE_RATE_PER_CLIENT: f64 = 60.0;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORING_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (workload, common, options) = match build(&cli.workload) {
        Ok(parts) => parts,
        Err(message) => {
            eprintln!("coring-loadgen: {message}");
            return ExitCode::from(2);
        }
    };
    let bar = progress_bar(common.quiet);
    let outcome = run(Arc::clone(&workload), &options, |p| show(&bar, p));
    bar.finish_and_clear();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("coring-loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(reason) = &outcome.fallback_reason {
        eprintln!("coring-loadgen: running on the compat driver: {reason}");
    }
    let report = Report::new(workload.kind(), &workload.target(), &options, &outcome);
    print!("{}", report.human());
    if let Err(message) = write_outputs(common, &report, &outcome) {
        eprintln!("coring-loadgen: {message}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// The workload, its common flags and the run options the command line asks for.
fn build(cmd: &WorkloadCmd) -> Result<(Arc<dyn Workload>, &Common, Options), String> {
    Ok(match cmd {
        WorkloadCmd::Http(h) => {
            let options = h.common.options();
            let body = match (&h.body, &h.body_file) {
                (Some(b), _) => b.clone().into_bytes(),
                (None, Some(path)) => std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                (None, None) => Vec::new(),
            };
            let headers = h
                .headers
                .iter()
                .map(|s| parse_header(s))
                .collect::<Result<_, _>>()?;
            #[cfg(not(target_os = "linux"))]
            if h.cacert.is_some() || h.url.starts_with("https://") {
                return Err("https:// is built on Linux only".into());
            }
            let spec = HttpSpec {
                url: h.url.clone(),
                method: h.method.clone(),
                headers,
                body,
                expect_status: h.expect_status,
                expect_body_bytes: h.expect_body_len,
                #[cfg(target_os = "linux")]
                tls: Some(coring_loadgen::link::client_config(h.cacert.as_deref())?),
                ..HttpSpec::default()
            };
            let http = Http::new(spec, options.pipeline)?;
            (Arc::new(http), &h.common, options)
        }
        WorkloadCmd::TcpEcho(e) => {
            let options = e.common.options();
            let echo = TcpEcho::new(&e.addr, e.size, options.pipeline)?;
            (Arc::new(echo), &e.common, options)
        }
        WorkloadCmd::Ws(w) => {
            let options = w.common.options();
            let echo = WsEcho::new(&w.url, w.size, w.text, options.pipeline)?;
            (Arc::new(echo), &w.common, options)
        }
        WorkloadCmd::WsBroadcast(b) => {
            let mut options = b.common.options();
            // The rate is the publishers' (the report shows it); members only receive.
            let rate = *options.rate.get_or_insert(60.0);
            let broadcast = WsBroadcast::new(&b.url, b.size, b.publishers, rate)?;
            (Arc::new(broadcast), &b.common, options)
        }
        WorkloadCmd::Netcode(n) => {
            let mut options = n.common.options();
            options
                .rate
                .get_or_insert(NETCODE_RATE_PER_CLIENT * options.connections as f64);
            let key = coring_loadgen::netcode::Key::from_hex(&n.private_key)
                .ok_or("--private-key: not 64 hex digits")?;
            let protocol_id = u64::from_str_radix(n.protocol_id.trim_start_matches("0x"), 16)
                .map_err(|_| "--protocol-id: not a hex u64")?;
            let echo = NetcodeEcho::new(&n.addr, n.size, protocol_id, key)?;
            (Arc::new(echo), &n.common, options)
        }
        WorkloadCmd::UdpEcho(u) => {
            let mut options = u.common.options();
            options.rate.get_or_insert(DEFAULT_UDP_RATE);
            let echo = UdpEcho::new(&u.addr, u.size)?;
            (Arc::new(echo), &u.common, options)
        }
    })
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("valid template"),
    );
    bar
}

fn show(bar: &ProgressBar, p: Progress) {
    if let Some(total) = p.total {
        bar.set_length(total.as_millis() as u64);
        bar.set_position(p.elapsed.as_millis() as u64);
    } else {
        bar.tick();
    }
    bar.set_message(format!("{:.0} req/s, {} done", p.rps, p.completed));
}

fn write_outputs(
    common: &Common,
    report: &Report,
    outcome: &coring_loadgen::run::Outcome,
) -> Result<(), String> {
    let write = |path: &std::path::Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &common.json {
        let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        write(path, &json)?;
    }
    if let Some(path) = &common.hgrm {
        write(path, &hgrm(&outcome.rec.latency))?;
    }
    if let Some(path) = &common.plot {
        write(path, &plot::svg(report)?)?;
    }
    Ok(())
}
