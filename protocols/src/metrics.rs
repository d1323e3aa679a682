//! The per-core counters in the Prometheus text exposition format (version 0.0.4), and a
//! route that serves them: every core's driver, buffer pool and connection counters, labelled
//! by core, then the process's admission and PROXY listener counters.
//!
//! ```no_run
//! # let runtime = coring::Runtime::builder().build()?;
//! let stats = runtime.stats_handle();
//! runtime.run(move |_core| {
//!     let router = coring_protocols::metrics::route(
//!         coring_protocols::serve::Router::new(),
//!         "/metrics",
//!         stats.clone(),
//!     );
//!     async move { /* serve `router` */ }
//! })?;
//! # Ok::<(), coring::Error>(())
//! ```

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use coring::CoreStats;
use coring::runtime::StatsHandle;

use crate::http1::Response;
use crate::serve::{self, Router};

/// The content type Prometheus expects of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes `cores`' counters, and the process's admission and PROXY counters, into `out`.
pub fn prometheus(cores: &[CoreStats], out: &mut String) {
    type Field = fn(&CoreStats) -> u64;
    let per_core: &[(&str, &str, &str, Field)] = &[
        (
            "ops_submitted_total",
            "counter",
            "Ops queued for the kernel.",
            |s| s.driver.ops_submitted,
        ),
        (
            "ops_completed_total",
            "counter",
            "Op completions received.",
            |s| s.driver.ops_completed,
        ),
        ("enters_total", "counter", "io_uring_enter calls.", |s| {
            s.driver.enters
        }),
        (
            "sq_full_total",
            "counter",
            "Times the submission queue filled mid-turn.",
            |s| s.driver.sq_full,
        ),
        (
            "cq_overflow_total",
            "counter",
            "Turns that found the completion queue overflowed.",
            |s| s.driver.cq_overflow,
        ),
        (
            "cancels_total",
            "counter",
            "Cancellations issued for dropped ops.",
            |s| s.driver.cancels,
        ),
        (
            "op_timeouts_total",
            "counter",
            "Per-op deadlines that fired.",
            |s| s.driver.timeouts,
        ),
        (
            "doorbells_total",
            "counter",
            "Cross-core wake-ups sent.",
            |s| s.driver.doorbells,
        ),
        (
            "ops_in_flight",
            "gauge",
            "Ops the kernel still owns.",
            |s| s.driver.in_flight,
        ),
        ("tasks", "gauge", "Live tasks.", |s| s.driver.tasks),
        (
            "pool_buffers",
            "gauge",
            "Buffers in the core's pool.",
            |s| s.pool.buffers,
        ),
        (
            "pool_buffers_in_use",
            "gauge",
            "Pool buffers handed out.",
            |s| s.pool.in_use,
        ),
        (
            "pool_misses_total",
            "counter",
            "Receives that found the pool empty.",
            |s| s.pool.misses,
        ),
        (
            "pool_enobufs_total",
            "counter",
            "ENOBUFS completions (the ring ran dry).",
            |s| s.pool.enobufs,
        ),
        (
            "connections_accepted_total",
            "counter",
            "Connections accepted.",
            |s| s.net.accepted,
        ),
        (
            "connections_connected_total",
            "counter",
            "Connections opened by connect.",
            |s| s.net.connected,
        ),
        (
            "connections_closed_total",
            "counter",
            "Connections closed.",
            |s| s.net.closed,
        ),
        ("connections_open", "gauge", "Connections open now.", |s| {
            s.net.open()
        }),
        ("received_bytes_total", "counter", "Bytes received.", |s| {
            s.net.bytes_in
        }),
        ("sent_bytes_total", "counter", "Bytes sent.", |s| {
            s.net.bytes_out
        }),
        (
            "timeouts_total",
            "counter",
            "time::timeout deadlines that passed.",
            |s| s.net.timeouts,
        ),
    ];
    for (name, kind, help, field) in per_core {
        let _ = writeln!(
            out,
            "# HELP coring_{name} {help}\n# TYPE coring_{name} {kind}"
        );
        for core in cores {
            let _ = writeln!(
                out,
                "coring_{name}{{core=\"{}\"}} {}",
                core.core,
                field(core)
            );
        }
    }
    let a = serve::admission_counters();
    let p = serve::proxy_counters();
    type Outcomes<'a> = &'a [(&'a str, &'a AtomicU64)];
    let labelled: &[(&str, &str, Outcomes)] = &[
        (
            "admission_total",
            "Connections and requests by what admission control did with them.",
            &[
                ("admitted", &a.admitted),
                ("denied", &a.denied),
                ("rate_limited", &a.rate_limited),
                ("over_source_cap", &a.over_source_cap),
                ("over_total", &a.over_total),
                ("request_limited", &a.requests_limited),
            ],
        ),
        (
            "proxy_headers_total",
            "Connections to PROXY listeners by what their header was.",
            &[
                ("accepted", &p.accepted),
                ("local", &p.local),
                ("untrusted", &p.untrusted),
                ("missing", &p.missing),
                ("malformed", &p.malformed),
                ("cut_short", &p.cut_short),
                ("timed_out", &p.timed_out),
            ],
        ),
    ];
    for (name, help, values) in labelled {
        let _ = writeln!(
            out,
            "# HELP coring_{name} {help}\n# TYPE coring_{name} counter"
        );
        for (outcome, value) in *values {
            let _ = writeln!(
                out,
                "coring_{name}{{outcome=\"{outcome}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

/// `router` with `GET path` answering every core's counters in the text format.
pub fn route(router: Router, path: &str, stats: StatsHandle) -> Router {
    router.route("GET", path, move |_req, _params| {
        let mut text = String::with_capacity(8 * 1024);
        prometheus(&stats.snapshot(), &mut text);
        async move {
            Response::new(200)
                .header("Content-Type", CONTENT_TYPE)
                .body(text)
        }
    })
}
