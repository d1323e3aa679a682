//! Command-line flags, wrk's where wrk has one.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use coring::driver::probe::DriverChoice;

use coring_loadgen::args::parse_duration;
use coring_loadgen::run::Options;

/// A coordinated-omission-correct load generator on the coring engine.
///
/// Closed model by default: each connection keeps `--pipeline` requests in flight and sends the
/// next when a response arrives. With `--rate` (open model) requests leave on a fixed schedule
/// and each latency counts from the request's intended send time, so a stalled server shows
/// up as the latency its users would have seen.
#[derive(Debug, Parser)]
#[command(name = "coring-loadgen", version)]
pub struct Cli {
    /// The workload.
    #[command(subcommand)]
    pub workload: WorkloadCmd,
}

/// Workloads.
#[derive(Debug, Subcommand)]
pub enum WorkloadCmd {
    /// HTTP/1.1 requests to URL over keep-alive connections.
    Http(HttpCmd),
    /// Messages to a TCP echo server at ADDR, every echoed byte checked.
    TcpEcho(EchoCmd),
    /// Datagrams to a UDP echo server at ADDR at a fixed rate; counts loss and reordering.
    UdpEcho(UdpCmd),
    /// WebSocket messages to an echo server at URL, every echoed message checked.
    Ws(WsCmd),
    /// WebSocket members of one room at URL (a server that delivers each text message to every
    /// member, the sender included); some of them publish at a fixed rate, and every member
    /// records each message's latency from its intended publish time.
    WsBroadcast(WsBroadcastCmd),
    /// netcode 1.02 sessions to an echo server at ADDR (tokens issued here with its key), each
    /// sending payloads at a fixed rate; counts loss and reordering.
    Netcode(NetcodeCmd),
}

/// `netcode` flags.
#[derive(Debug, Args)]
pub struct NetcodeCmd {
    /// HOST:PORT of the netcode echo server.
    pub addr: String,
    /// The server's private key, 64 hex digits.
    #[arg(long)]
    pub private_key: String,
    /// The server's protocol id, hex (0x optional).
    #[arg(long)]
    pub protocol_id: String,
    /// Payload size in bytes (12 to 1200).
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    /// Common flags (`-c` is the number of clients; `--rate`, all clients together, defaults
    /// to 60 payloads/s per client).
    #[command(flatten)]
    pub common: Common,
}

/// `ws` flags.
#[derive(Debug, Args)]
pub struct WsCmd {
    /// ws://host:port/path
    pub url: String,
    /// Message size in bytes.
    #[arg(short = 's', long, default_value_t = 20)]
    pub size: usize,
    /// Text messages (default binary).
    #[arg(long)]
    pub text: bool,
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
}

/// `ws-broadcast` flags.
#[derive(Debug, Args)]
pub struct WsBroadcastCmd {
    /// ws://host:port/path of the room.
    pub url: String,
    /// Message size in bytes (at least 48).
    #[arg(short = 's', long, default_value_t = 100)]
    pub size: usize,
    /// Members that also publish.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Common flags (`-c` is the number of members; `--rate`, all publishers together,
    /// defaults to 60 messages/s).
    #[command(flatten)]
    pub common: Common,
}

/// `http` flags.
#[derive(Debug, Args)]
pub struct HttpCmd {
    /// http://host:port/path, or https:// (Linux builds)
    pub url: String,
    /// For https://: trust the CA certificates in this PEM file instead of the public roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Status every response must have (default: any 2xx or 3xx).
    #[arg(long, value_name = "CODE")]
    pub expect_status: Option<u16>,
    /// Body length every response must have, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub expect_body_len: Option<u64>,
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
}

/// `tcp-echo` flags.
#[derive(Debug, Args)]
pub struct EchoCmd {
    /// HOST:PORT of the echo server.
    pub addr: String,
    /// Message size in bytes.
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
}

/// `udp-echo` flags.
#[derive(Debug, Args)]
pub struct UdpCmd {
    /// HOST:PORT of the echo server.
    pub addr: String,
    /// Datagram size in bytes (at least 12: socket and sequence numbers).
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    /// Common flags (`--rate` defaults to 10000 datagrams/s for UDP, which needs a rate).
    #[command(flatten)]
    pub common: Common,
}

/// Flags of every workload.
#[derive(Debug, Args)]
pub struct Common {
    /// Connections (sockets, for UDP) across all cores.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Measured period: 10s, 1m, 500ms (default 10s; with --requests, a cap, default none).
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many responses (or at --duration, if given and sooner).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Load generator cores, one pinned engine thread each.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// Requests in flight per connection.
    #[arg(short = 'p', long, default_value_t = 1)]
    pub pipeline: usize,
    /// Open model: total requests per second, latency from each intended send time.
    #[arg(short = 'R', long)]
    pub rate: Option<f64>,
    /// Unanswered request (and connect) timeout: 5s, 500ms.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Traffic before the measured period, excluded from every figure.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Engine driver: auto, uring or compat.
    #[arg(long, env = "CORING_DRIVER", default_value = "auto", value_parser = parse_driver)]
    pub driver: DriverChoice,
    /// Do not pin the load generator's threads to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the latency distribution in HdrHistogram's percentile format to FILE.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Write an SVG chart (latency by percentile, throughput over time) to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No live progress bar.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

impl Common {
    /// The run options these flags ask for.
    pub fn options(&self) -> Options {
        Options {
            connections: self.connections,
            cores: self.cores,
            duration: match (self.duration, self.requests) {
                (Some(d), _) => d,
                (None, None) => Duration::from_secs(10),
                (None, Some(_)) => Duration::MAX,
            },
            requests: self.requests,
            warmup: self.warmup,
            pipeline: self.pipeline,
            rate: self.rate,
            timeout: self.timeout,
            driver: self.driver,
            pin: !self.no_pin,
        }
    }
}

fn parse_driver(s: &str) -> Result<DriverChoice, String> {
    DriverChoice::parse(s).ok_or_else(|| format!("{s:?} is not auto, uring or compat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_options() {
        let cli = Cli::try_parse_from([
            "coring-loadgen",
            "http",
            "http://127.0.0.1:1/x",
            "-c",
            "8",
            "-d",
            "3s",
            "--pipeline",
            "16",
            "-R",
            "1000",
            "-H",
            "A: b",
        ])
        .expect("valid flags");
        let WorkloadCmd::Http(http) = cli.workload else {
            panic!("http subcommand")
        };
        let o = http.common.options();
        assert_eq!((o.connections, o.pipeline), (8, 16));
        assert_eq!(o.duration, Duration::from_secs(3));
        assert_eq!(o.rate, Some(1000.0));
        assert_eq!(http.headers, ["A: b"]);
        assert!(Cli::try_parse_from(["coring-loadgen", "http"]).is_err());
    }
}
