//! Running a workload: one pinned engine core per `--cores`, connections spread across them,
//! the closed or open model, warm-up, and the figures merged at the end.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coring::driver::probe::{DriverChoice, DriverKind};
use coring::runtime::Runtime;

use crate::record::Recorder;

/// How a run is shaped; the workload-independent flags.
#[derive(Clone, Debug)]
pub struct Options {
    /// Connections (sockets, for UDP) across all cores.
    pub connections: usize,
    /// Engine cores (one pinned thread each).
    pub cores: usize,
    /// Length of the measured period when `requests` is `None`; with `requests`, the most the
    /// measured period may last (`Duration::MAX`: no limit).
    pub duration: Duration,
    /// Stop after this many responses in the measured period (or at `duration`, if sooner).
    pub requests: Option<u64>,
    /// Traffic before the measured period, not counted.
    pub warmup: Duration,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Open model: total requests per second, each latency measured from its intended send time.
    /// `None`: closed model (the next request goes out when a response frees its slot).
    pub rate: Option<f64>,
    /// A request unanswered this long fails its connection (counted as `timeout`); also the
    /// connect timeout.
    pub timeout: Duration,
    /// Engine driver.
    pub driver: DriverChoice,
    /// Pin each core's thread to a CPU of the allowed set.
    pub pin: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: 64,
            cores: 1,
            duration: Duration::from_secs(10),
            requests: None,
            warmup: Duration::ZERO,
            pipeline: 1,
            rate: None,
            timeout: Duration::from_secs(5),
            driver: DriverChoice::Auto,
            pin: true,
        }
    }
}

/// The first address `target` (`host:port`, or a `(host, port)` pair) resolves to; `name` is
/// how the user wrote it, for the error.
pub fn resolve(target: impl ToSocketAddrs, name: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {name}: {e}"))?
        .next()
        .ok_or_else(|| format!("{name} has no address"))
}

/// A kind of traffic (`http`, `tcp-echo`, `udp-echo`, …). New workloads implement it and get
/// the runner, the models, the recording and the reports for free.
pub trait Workload: Send + Sync + 'static {
    /// Short name used in reports.
    fn kind(&self) -> &'static str;
    /// What is being loaded, as the user named it.
    fn target(&self) -> String;
    /// Drives one connection slot on the current core until `lane.run` says the run is over,
    /// reconnecting after failures.
    fn connection(self: Arc<Self>, lane: Lane) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// One core's share of a run, shared by its connections.
#[derive(Debug)]
pub struct CoreRun {
    /// The run's options.
    pub options: Options,
    /// This core's figures.
    pub rec: RefCell<Recorder>,
    /// Nothing is sent at or after this instant.
    pub send_until: Instant,
    /// Responses still to be asked for when the run is bounded by a request count.
    permits: Cell<Option<u64>>,
    /// Responses completed (warm-up included), for the live progress display.
    progress: Arc<AtomicU64>,
}

impl CoreRun {
    /// Whether this core should stop sending.
    pub fn stop_sending(&self, now: Instant) -> bool {
        now >= self.send_until || self.permits.get() == Some(0)
    }

    /// Takes up to `want` requests from the run's budget (all of them in a timed run). Requests
    /// during warm-up are free.
    pub fn take(&self, want: usize, now: Instant) -> usize {
        match self.permits.get() {
            Some(left) if now >= self.rec.borrow().measure_from => {
                let k = (want as u64).min(left);
                self.permits.set(Some(left - k));
                k as usize
            }
            _ => want,
        }
    }

    /// Whether the request budget is spent (never, in a timed run).
    pub fn budget_spent(&self) -> bool {
        self.permits.get() == Some(0)
    }

    /// Reports `n` completions to the progress display.
    pub fn progress(&self, n: u64) {
        self.progress.fetch_add(n, Ordering::Relaxed);
    }
}

/// A connection slot: which one it is, its core's run and, in the open model, its schedule.
#[derive(Debug)]
pub struct Lane {
    /// Index among all connections of the run.
    pub index: usize,
    /// The core's run.
    pub run: Rc<CoreRun>,
    /// The open model's send times for this slot; `None` in the closed model.
    pub schedule: Option<Rc<Schedule>>,
}

/// Intended send times of one connection slot in the open model: evenly spaced, carried across
/// reconnects, never skipped (a late request keeps its intended time, so the time it waited
/// counts in its latency: no coordinated omission).
#[derive(Debug)]
pub struct Schedule {
    next: Cell<Instant>,
    interval: Duration,
}

impl Schedule {
    /// A schedule of `rate` requests per second starting at `first`.
    pub fn new(first: Instant, rate: f64) -> Schedule {
        Schedule {
            next: Cell::new(first),
            interval: Duration::from_secs_f64(1.0 / rate),
        }
    }

    /// The next intended send time.
    pub fn next(&self) -> Instant {
        self.next.get()
    }

    /// How many sends are due at `now` (0 if the next is in the future).
    pub fn due(&self, now: Instant) -> usize {
        let next = self.next.get();
        if next > now {
            return 0;
        }
        let behind = now.duration_since(next).as_nanos() / self.interval.as_nanos().max(1);
        (behind as usize).saturating_add(1)
    }

    /// Takes the next `k` intended send times.
    pub fn take(&self, k: usize, mut each: impl FnMut(Instant)) {
        let mut t = self.next.get();
        for _ in 0..k {
            each(t);
            t += self.interval;
        }
        self.next.set(t);
    }

    /// Takes the next intended send time.
    pub fn pop(&self) -> Instant {
        let t = self.next.get();
        self.next.set(t + self.interval);
        t
    }

    /// Time between sends.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Every core's figures, merged.
    pub rec: Recorder,
    /// Length of the measured period actually covered.
    pub measured: Duration,
    /// Driver the engine ran on.
    pub driver: DriverKind,
    /// Why io_uring was not used, when it was not.
    pub fallback_reason: Option<String>,
}

/// Live figures handed to the progress callback about four times a second.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Time since the run began.
    pub elapsed: Duration,
    /// Length of the whole run (warm-up included); `None` when bounded by a request count.
    pub total: Option<Duration>,
    /// Responses per second over the last tick.
    pub rps: f64,
    /// Responses so far (warm-up included).
    pub completed: u64,
}

/// A run failed to start.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Runs `workload` as `options` say, calling `on_progress` from the calling thread while it
/// runs, and returns the merged figures.
pub fn run(
    workload: Arc<dyn Workload>,
    options: &Options,
    mut on_progress: impl FnMut(Progress),
) -> Result<Outcome, RunError> {
    if options.connections == 0 || options.cores == 0 || options.pipeline == 0 {
        return Err(RunError(
            "connections, cores and pipeline must be at least 1".into(),
        ));
    }
    if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(RunError("--rate must be a positive number".into()));
    }
    let cores = options.cores.min(options.connections);
    let mut builder = Runtime::builder()
        .cores(cores)
        .pin(options.pin)
        .thread_name("loadgen")
        .shutdown_grace(Duration::from_millis(100));
    if options.driver != DriverChoice::Auto {
        // Auto leaves the choice to the engine, which honours CORING_DRIVER.
        builder = builder.driver(options.driver);
    }
    let rt = builder
        .build()
        .map_err(|e| RunError(format!("cannot start the engine: {e}")))?;
    let driver = rt.driver_kind();
    let fallback_reason = rt.fallback_reason().map(str::to_owned);

    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + options.warmup;
    // A run bounded by a request count ends at its duration cap, if any; a day stands in for
    // "never".
    let send_until = measure_from + options.duration.min(Duration::from_secs(86_400));
    let counters: Vec<Arc<AtomicU64>> = (0..cores).map(|_| Arc::default()).collect();
    let results: Arc<Mutex<Vec<Recorder>>> = Arc::default();
    let total = options
        .requests
        .is_none()
        .then(|| send_until.duration_since(start));

    std::thread::scope(|scope| -> Result<(), RunError> {
        let worker = scope.spawn(|| {
            rt.run(|core| {
                let index = core.index();
                let budget = options
                    .requests
                    .map(|n| n / cores as u64 + u64::from((index as u64) < n % cores as u64));
                let run = Rc::new(CoreRun {
                    options: options.clone(),
                    rec: RefCell::new(Recorder::new(measure_from, send_until)),
                    send_until,
                    permits: Cell::new(budget),
                    progress: Arc::clone(&counters[index]),
                });
                let workload = Arc::clone(&workload);
                let results = Arc::clone(&results);
                let connections = options.connections;
                let rate = options.rate;
                async move {
                    coring::time::sleep_until(start).await;
                    let mut lanes = Vec::new();
                    for lane in (index..connections).step_by(cores) {
                        // Each slot's share of the rate, its first send staggered so the slots'
                        // sends interleave evenly.
                        let schedule = rate.map(|r| {
                            let per_lane = r / connections as f64;
                            let offset = Duration::from_secs_f64(lane as f64 / r);
                            Rc::new(Schedule::new(start + offset, per_lane))
                        });
                        let lane = Lane {
                            index: lane,
                            run: Rc::clone(&run),
                            schedule,
                        };
                        lanes.push(coring::spawn_local(Arc::clone(&workload).connection(lane)));
                    }
                    for lane in lanes {
                        let _ = lane.await;
                    }
                    let rec = run.rec.borrow().clone();
                    results.lock().expect("results lock").push(rec);
                }
            })
        });
        let tick = Duration::from_millis(250);
        let (mut last_count, mut last_at) = (0, Instant::now());
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(25));
            let now = Instant::now();
            if now.duration_since(last_at) < tick {
                continue;
            }
            let count: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            on_progress(Progress {
                elapsed: now.saturating_duration_since(start),
                total,
                rps: (count - last_count) as f64 / now.duration_since(last_at).as_secs_f64(),
                completed: count,
            });
            (last_count, last_at) = (count, now);
        }
        match worker.join() {
            Ok(result) => result.map_err(|e| RunError(format!("engine failed: {e}"))),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;

    let mut recorders = std::mem::take(&mut *results.lock().expect("results lock")).into_iter();
    let mut rec = recorders
        .next()
        .ok_or_else(|| RunError("no core reported figures".into()))?;
    for other in recorders {
        rec.merge(&other);
    }
    let measured = match options.requests {
        Some(_) => rec.last_completion.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(measure_from)
        }),
        None => options.duration,
    };
    Ok(Outcome {
        rec,
        measured,
        driver,
        fallback_reason,
    })
}
