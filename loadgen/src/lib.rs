//! coring-loadgen: a coordinated-omission-correct load generator built on the coring engine.
//!
//! One pinned engine thread per `--cores`, io_uring where the kernel has it, connections spread
//! across the cores. Two models:
//!
//! - **closed** (default): each connection keeps `pipeline` requests in flight and sends the
//!   next as soon as a response frees a slot. Each request's latency runs from the moment it was
//!   written to the moment its response completed, pipelined or not.
//! - **open** (`rate`): requests leave on a fixed schedule, spread evenly over the connections,
//!   and each latency runs from the request's *intended* send time. A server that stalls makes
//!   the requests behind the stall wait, and that wait is in their latency (coordinated omission
//!   corrected, as wrk2 does).
//!
//! Latencies go into HdrHistograms (1 µs to 60 s, 3 significant digits) merged across cores;
//! every response is checked and every failure counted by kind.
//!
//! # The map
//!
//! - [`run`]: [`run::run`] runs any [`run::Workload`] on the engine's cores, closed or open
//!   model, warm-up, and merges what each core saw.
//! - [`stream`]: the connection loop every TCP request/response workload shares (connect, keep
//!   `pipeline` in flight or follow the schedule, match answers in order, reconnect).
//! - [`http`], [`echo`], [`udp`], [`ws`], [`broadcast`], [`netcode`]: the workloads (`http`,
//!   `tcp-echo`, `udp-echo`, `ws`, `ws-broadcast`, `netcode`).
//! - [`record`]: one core's latencies, counts, errors and per-second timeline.
//! - [`report`]: the outcome as a table, JSON and HdrHistogram percentile text.
//! - [`args`]: parsing of flag values (durations, headers) without a CLI crate.
//!
//! The binary (`coring-loadgen`: flags, the live progress bar, the SVG chart) is the package
//! `coring-loadgen-cli` in `loadgen/cli/`, so that this library depends on no CLI or plotting
//! crate.
//!
//! ```no_run
//! use std::sync::Arc;
//! use coring_loadgen::{http::{Http, HttpSpec}, report::Report, run::{Options, run}};
//!
//! let options = Options { connections: 16, pipeline: 16, ..Options::default() };
//! let spec = HttpSpec { url: "http://127.0.0.1:8080/plaintext".into(), ..HttpSpec::default() };
//! let http = Arc::new(Http::new(spec, options.pipeline).unwrap());
//! let outcome = run(http.clone(), &options, |_| {}).unwrap();
//! print!("{}", Report::new("http", "http://127.0.0.1:8080/plaintext", &options, &outcome).human());
//! ```

pub mod args;
pub mod broadcast;
pub mod echo;
pub mod http;
pub mod link;
pub mod netcode;
pub mod record;
pub mod report;
pub mod run;
pub mod stream;
pub mod udp;
pub mod ws;
