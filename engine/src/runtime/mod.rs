//! Thread-per-core runtime: one pinned thread per core, each with its own driver, executor,
//! timers and stats.
//!
//! ```no_run
//! use coring::net::TcpListener;
//!
//! coring::Runtime::builder()
//!     .cores(2)
//!     .pin(true)
//!     .build()?
//!     .run(|core| async move {
//!         // One listener per core; the kernel spreads connections (SO_REUSEPORT).
//!         let listener = TcpListener::bind_reuseport("127.0.0.1:8080").unwrap();
//!         println!("core {} accepting", core.index());
//!         let shutdown = coring::runtime::shutdown_signal();
//!         # drop((listener, shutdown));
//!     })?;
//! # Ok::<(), coring::Error>(())
//! ```

pub(crate) mod context;
mod core;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::buf::pool::Pool;
use crate::buf::{DEFAULT_POOL_BUFFER_BYTES, DEFAULT_POOL_BUFFERS, PoolStats};
use crate::driver::probe::{self, Capabilities, DriverChoice, DriverKind};
use crate::driver::{Driver, DriverConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::stats::{CoreStats, DriverStats, Published};
use crate::task::{Executor, JoinError};
use crate::time::Timers;
use context::{CoreContext, CoreShared};

/// SQ entries per core unless configured.
pub const DEFAULT_RING_ENTRIES: u32 = 1024;
/// Cross-core spawn queue per core unless configured.
pub const DEFAULT_MAILBOX: usize = 1024;
/// With [`Builder::coalesce_wakeups`], a sleeping core is woken before its window is up once
/// this many completions are ready (on rings with deferred task work: this many pieces of it,
/// such as sockets with news).
pub const COALESCE_BATCH: u32 = 32;
/// How long in-flight work may run after a shutdown request, unless configured.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Settings of a runtime, fixed at `build`.
#[derive(Clone, Debug)]
pub(crate) struct RuntimeConfig {
    pub(crate) cores: usize,
    pub(crate) pin: bool,
    /// What the probe and the drivers take.
    pub(crate) driver: DriverConfig,
    pub(crate) grace: Duration,
    pub(crate) name: String,
    pub(crate) pool_buffers: u16,
    pub(crate) pool_buffer_bytes: usize,
    pub(crate) mailbox: usize,
}

/// Configures a [`Runtime`].
#[derive(Clone, Debug)]
pub struct Builder {
    cores: usize,
    pin: bool,
    ring_entries: u32,
    sqpoll_idle: Option<Duration>,
    coalesce: Option<Duration>,
    driver: Option<DriverChoice>,
    grace: Duration,
    name: String,
    pool_buffers: u16,
    pool_buffer_bytes: usize,
    mailbox: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cores: 1,
            pin: false,
            ring_entries: DEFAULT_RING_ENTRIES,
            sqpoll_idle: None,
            coalesce: None,
            driver: None,
            grace: DEFAULT_SHUTDOWN_GRACE,
            name: "coring".into(),
            pool_buffers: DEFAULT_POOL_BUFFERS,
            pool_buffer_bytes: DEFAULT_POOL_BUFFER_BYTES,
            mailbox: DEFAULT_MAILBOX,
        }
    }
}

impl Builder {
    /// Number of cores (threads), at least 1. Default 1.
    pub fn cores(mut self, n: usize) -> Self {
        self.cores = n.max(1);
        self
    }

    /// Pins core `i` to the `i`-th CPU this process may use (`taskset` is respected).
    /// Default off.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// SQ entries per core (rounded up to a power of two; the CQ gets twice as many). Shrunk
    /// to fit RLIMIT_MEMLOCK on kernels before 5.12. Default [`DEFAULT_RING_ENTRIES`].
    pub fn ring_entries(mut self, entries: u32) -> Self {
        self.ring_entries = entries;
        self
    }

    /// Turns on SQPOLL: a kernel thread per core polls the SQ and goes idle after `idle`.
    /// Saves submission syscalls at the price of a busy kernel thread; off by default.
    pub fn sqpoll(mut self, idle: Option<Duration>) -> Self {
        self.sqpoll_idle = idle;
        self
    }

    /// Lets completions gather before a sleeping core wakes: once it has gone to sleep, a core
    /// is woken only when [`COALESCE_BATCH`] completions are ready, a timer is due, or `window`
    /// has passed and something is ready (after which the next completion wakes it at once).
    /// Under a steady stream of small arrivals (game clients' datagrams, many quiet
    /// connections) several of them then share one wake-up, one context switch and one batch
    /// of sends, at the price of up to `window` of added latency per arrival; an idle core
    /// still wakes at the first arrival after `window`. Mail from other cores waits the same.
    ///
    /// io_uring only, on kernels with `IORING_FEAT_MIN_TIMEOUT` (6.12); elsewhere ignored
    /// (logged once). [`Runtime::coalescing`] says whether it is in effect. Off by default;
    /// windows under 1 µs are off, longer than 1 s are cut to 1 s.
    pub fn coalesce_wakeups(mut self, window: Option<Duration>) -> Self {
        self.coalesce = window
            .filter(|w| *w >= Duration::from_micros(1))
            .map(|w| w.min(Duration::from_secs(1)));
        self
    }

    /// Forces a driver. Without this, `CORING_DRIVER` (`auto`, `uring`, `compat`) decides,
    /// and without that, the capability probe does.
    pub fn driver(mut self, choice: DriverChoice) -> Self {
        self.driver = Some(choice);
        self
    }

    /// How long in-flight work may continue after a shutdown request before it is cancelled.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Each core's receive-buffer pool: `buffers` (rounded up to a power of two, at most
    /// 32768) of `bytes` each. Pooled receives ([`crate::net::TcpStream::pooled`]) take buffers
    /// from it only when data arrives. Default [`DEFAULT_POOL_BUFFERS`] ×
    /// [`DEFAULT_POOL_BUFFER_BYTES`].
    pub fn buffer_pool(mut self, buffers: u16, bytes: usize) -> Self {
        self.pool_buffers = buffers.clamp(1, 32768);
        self.pool_buffer_bytes = bytes;
        self
    }

    /// How many closures sent with [`crate::shard::spawn_on`] may wait for each core before
    /// further sends are refused (backpressure). Default [`DEFAULT_MAILBOX`].
    pub fn spawn_queue(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Core threads are named `{name}-{index}` (default `coring`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Probes the host, logs the capability report once, and prepares the runtime. Fails when
    /// no driver can run here.
    pub fn build(self) -> Result<Runtime> {
        let (driver, driver_source) = match self.driver {
            Some(choice) => (choice, "builder"),
            None => match std::env::var("CORING_DRIVER") {
                // A `#[coring::test]` case names its driver for the runtimes it builds.
                _ if let Some(choice) = crate::__test::case_driver() => (choice, "the test case"),
                Ok(v) => match DriverChoice::parse(&v) {
                    Some(choice) => (choice, "CORING_DRIVER"),
                    None => {
                        return Err(Error::new(ErrorKind::InvalidInput, "CORING_DRIVER"));
                    }
                },
                // Built with `--cfg coring_force_compat`, the default is the compat driver.
                Err(_) if cfg!(coring_force_compat) => {
                    (DriverChoice::Compat, "cfg coring_force_compat")
                }
                Err(_) => (DriverChoice::Auto, "default"),
            },
        };
        let config = RuntimeConfig {
            cores: self.cores,
            pin: self.pin,
            driver: DriverConfig {
                ring_entries: self.ring_entries,
                sqpoll_idle: self.sqpoll_idle,
                coalesce: self.coalesce,
                driver,
                driver_source,
            },
            grace: self.grace,
            name: self.name,
            pool_buffers: self.pool_buffers,
            pool_buffer_bytes: self.pool_buffer_bytes,
            mailbox: self.mailbox,
        };
        let caps = probe::probe(&config.driver);
        tracing::info!(driver = ?caps.driver, reason = %caps.reason, "coring capability report:\n{caps}");
        if let Some(window) = config.driver.coalesce
            && !(caps.driver == DriverKind::Uring && caps.min_wait)
        {
            tracing::warn!(
                ?window,
                "wake-up coalescing needs io_uring with min-wait (Linux 6.12); the cores wake at \
                 every completion"
            );
        }
        if caps.driver == DriverKind::Uring && caps.io_uring != probe::UringStatus::Available {
            // Only reachable when io_uring was forced: Auto falls back to compat.
            return Err(Error::new(
                ErrorKind::Unsupported,
                "io_uring (forced, but unusable here; see the capability report)",
            ));
        }
        if caps.driver == DriverKind::Compat {
            if driver == DriverChoice::Compat || caps.io_uring == probe::UringStatus::NotLinux {
                tracing::info!(reason = %caps.reason, "running on the compat (readiness) driver");
            } else {
                tracing::warn!(reason = %caps.reason, "io_uring unusable; running on compat");
            }
        }
        Ok(Runtime {
            shared: Arc::new(RuntimeShared {
                shutdown: AtomicBool::new(false),
                grace: config.grace,
                cores: Mutex::new(vec![None; config.cores]),
                stats: (0..config.cores)
                    .map(|i| Arc::new(Published::new(i)))
                    .collect(),
                roots_running: std::sync::atomic::AtomicUsize::new(0),
            }),
            config,
            caps,
        })
    }
}

/// A set of cores ready to run.
#[derive(Debug)]
pub struct Runtime {
    config: RuntimeConfig,
    caps: Capabilities,
    shared: Arc<RuntimeShared>,
}

/// State shared by the cores of one runtime.
pub(crate) struct RuntimeShared {
    shutdown: AtomicBool,
    pub(crate) grace: Duration,
    /// The running cores, by index (`None` before a core starts and after it stops).
    cores: Mutex<Vec<Option<Arc<CoreShared>>>>,
    /// Each core's published counters, by core index.
    stats: Vec<Arc<Published>>,
    /// Cores of `run` whose root future has not finished. Cores stay up (to serve cross-core
    /// work) until every root is done.
    roots_running: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for RuntimeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeShared")
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl RuntimeShared {
    pub(crate) fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    /// Ends the blocking wait of every running core, at once (see `CoreShared::wake_now`).
    fn wake_all(&self) {
        for core in self
            .cores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
        {
            core.wake_now();
        }
    }

    /// Whether every root of `run` has finished.
    pub(crate) fn all_roots_done(&self) -> bool {
        self.roots_running.load(Ordering::SeqCst) == 0
    }

    /// A root finished; the last one wakes every core so idle ones can stop.
    pub(crate) fn root_done(&self) {
        if self.roots_running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.wake_all();
        }
    }

    /// The shared part of running core `index`.
    pub(crate) fn core(&self, index: usize) -> Option<Arc<CoreShared>> {
        self.cores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .cloned()
            .flatten()
    }

    /// How many cores the runtime has.
    pub(crate) fn core_count(&self) -> usize {
        self.stats.len()
    }
}

impl Runtime {
    /// A builder with defaults: one core, no pinning, io_uring when available.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// What the start-up probe found and which driver runs.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The wake-up coalescing window in effect ([`Builder::coalesce_wakeups`]): the one asked
    /// for when the cores run io_uring on a kernel with min-wait, else `None`.
    pub fn coalescing(&self) -> Option<Duration> {
        self.config
            .driver
            .coalesce
            .filter(|_| self.caps.driver == DriverKind::Uring && self.caps.min_wait)
    }

    /// The driver the cores run.
    pub fn driver_kind(&self) -> DriverKind {
        self.caps.driver
    }

    /// Why the compat driver runs instead of io_uring (forced, or io_uring unusable); `None`
    /// on io_uring.
    pub fn fallback_reason(&self) -> Option<&str> {
        (self.caps.driver == DriverKind::Compat).then_some(self.caps.reason.as_str())
    }

    /// Each core's counters as of its last loop turn, readable from any thread (also while
    /// [`Runtime::run`] blocks another one: see [`Runtime::stats_handle`]).
    pub fn stats(&self) -> Vec<CoreStats> {
        self.stats_handle().snapshot()
    }

    /// How many cores the runtime runs.
    pub fn cores(&self) -> usize {
        self.shared.core_count()
    }

    /// A `Send` handle that reads every core's counters from any thread.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    pub(crate) fn shared(&self) -> Arc<RuntimeShared> {
        Arc::clone(&self.shared)
    }

    /// A handle that starts a graceful shutdown from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Starts a graceful shutdown on SIGINT or SIGTERM (a helper thread waits for them); on
    /// Windows, on Ctrl+C, Ctrl+Break or the console closing.
    pub fn shutdown_on_signals(&self) -> Result<()> {
        let handle = self.shutdown_handle();
        crate::sys::signal::on_shutdown_signal(move || handle.shutdown())
    }

    /// Restarts on SIGHUP without dropping a connection (Unix): starts a new copy of this
    /// executable with the same arguments, hands it every socket offered with
    /// [`restart::offer`](crate::restart::offer), and once it says it serves, shuts this runtime
    /// down gracefully (stop accepting, drain, return from [`Runtime::run`]). A restart that
    /// fails leaves this process serving. See [`crate::restart`].
    #[cfg(unix)]
    pub fn restart_on_hangup(&self) -> Result<()> {
        let handle = self.shutdown_handle();
        crate::restart::on_hangup(move || handle.shutdown())
    }

    /// Runs `f` once on every core and returns when every core has stopped.
    ///
    /// A core stops when its root future has returned and its other tasks are done, or, after
    /// a shutdown request, when the grace period ends (remaining tasks are then cancelled).
    /// A panic in a root future is re-raised here after the other cores have stopped.
    pub fn run<F, Fut>(&self, f: F) -> Result<()>
    where
        F: Fn(Core) -> Fut + Sync,
        Fut: Future<Output = ()> + 'static,
    {
        let cpus = if self.config.pin {
            crate::sys::thread::allowed_cpus()?
        } else {
            Vec::new()
        };
        let f = &f;
        let start = &std::sync::Barrier::new(self.config.cores);
        self.shared
            .roots_running
            .store(self.config.cores, Ordering::Release);
        let results: Vec<std::thread::Result<Result<()>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.config.cores)
                .map(|index| {
                    let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
                    std::thread::Builder::new()
                        .name(format!("{}-{index}", self.config.name))
                        .spawn_scoped(scope, move || {
                            let result =
                                self.run_core(index, cpu, Some(start), f, core::Exit::Drained);
                            match result {
                                Ok(Ok(())) | Ok(Err(JoinError::Cancelled)) => Ok(()),
                                Ok(Err(JoinError::Panicked(panic))) => {
                                    // The others stop too; the panic goes on to the caller.
                                    self.shared.request_shutdown();
                                    std::panic::resume_unwind(panic)
                                }
                                Err(e) => {
                                    // A core that cannot start takes the others down with it.
                                    self.shared.request_shutdown();
                                    Err(e)
                                }
                            }
                        })
                        .expect("spawn core thread")
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut first_err = None;
        for r in results {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs `future` to completion on a core on the calling thread (not pinned) and returns its
    /// output. Tasks still running when it finishes are cancelled.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        match self.run_core(0, None, None, |_| future, core::Exit::RootDone) {
            Ok(Ok(out)) => out,
            Ok(Err(JoinError::Panicked(p))) => std::panic::resume_unwind(p),
            Ok(Err(JoinError::Cancelled)) => panic!("block_on future was cancelled"),
            Err(e) => panic!("coring core failed to start: {e}"),
        }
    }

    /// Sets up core `index` and runs it. With `start`, every core waits there after setting
    /// up (failed ones too), so no root runs before all cores can receive cross-core work.
    fn run_core<Fut, G>(
        &self,
        index: usize,
        cpu: Option<usize>,
        start: Option<&std::sync::Barrier>,
        make: G,
        exit: core::Exit,
    ) -> Result<Result<Fut::Output, JoinError>>
    where
        G: FnOnce(Core) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        let setup = self.setup_core(index, cpu);
        if let Some(start) = start {
            start.wait();
        }
        let (ctx, shared) = setup?;
        let handle = Core {
            index,
            cores: self.config.cores,
            shutdown: self.shutdown_handle(),
        };
        let out = core::run(ctx, make(handle), exit);
        if let Some(slot) = self
            .shared
            .cores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
            && slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &shared))
        {
            *slot = None;
        }
        Ok(out)
    }

    /// Pins the thread, builds the core's driver, pool and context, and registers it.
    fn setup_core(
        &self,
        index: usize,
        cpu: Option<usize>,
    ) -> Result<(Rc<CoreContext>, Arc<CoreShared>)> {
        if let Some(cpu) = cpu {
            crate::sys::thread::pin_to(cpu)?;
        }
        let buffers = self.config.pool_buffers;
        let ring = crate::driver::kernel_ring(self.caps.driver, Pool::rounded(buffers));
        let pool = Pool::new(buffers, self.config.pool_buffer_bytes, ring);
        let (driver, doorbell) = Driver::new(&self.config.driver, &self.caps, &pool)?;
        let shared = Arc::new(CoreShared::new(doorbell, self.config.mailbox));
        pool.set_core(Arc::downgrade(&shared));
        if self.caps.msg_ring
            && let Driver::Uring(d) = &driver
        {
            let fd = d.ring_fd().map_err(|e| Error::from_io(e, "dup ring fd"))?;
            shared.set_ring_fd(fd);
        }
        if let Some(slot) = self
            .shared
            .cores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
        {
            *slot = Some(Arc::clone(&shared));
        }
        let ctx = Rc::new(CoreContext {
            id: context::next_core_id(),
            index,
            driver: Rc::new(RefCell::new(driver)),
            pool,
            net: Cell::new(Default::default()),
            published: Arc::clone(&self.shared.stats[index.min(self.shared.stats.len() - 1)]),
            executor: Executor::new(),
            timers: RefCell::new(Timers::default()),
            due: Cell::new(Vec::new()),
            clock: Cell::new(Instant::now()),
            shared: Arc::clone(&shared),
            runtime: Arc::clone(&self.shared),
            shutdown_deadline: Cell::new(None),
            shutdown_waiters: RefCell::new(slab::Slab::new()),
        });
        Ok((ctx, shared))
    }
}

/// Runs `future` on a fresh single-core runtime on this thread (io_uring unless
/// `CORING_DRIVER` says otherwise) and returns its output.
///
/// # Panics
///
/// Panics when no driver can run here, or when `future` panics.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    match Runtime::builder().build() {
        Ok(rt) => rt.block_on(future),
        Err(e) => panic!("coring runtime unavailable: {e}"),
    }
}

/// The handle each core's root closure receives.
#[derive(Clone, Debug)]
pub struct Core {
    index: usize,
    cores: usize,
    shutdown: ShutdownHandle,
}

impl Core {
    /// This core's position, `0..cores()`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many cores the runtime has.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// A handle to shut the whole runtime down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    pub(crate) fn runtime_shared(&self) -> &RuntimeShared {
        &self.shutdown.shared
    }
}

/// Reads the counters of every core of a runtime, from any thread.
#[derive(Clone, Debug)]
pub struct StatsHandle {
    shared: Arc<RuntimeShared>,
}

impl StatsHandle {
    /// One snapshot per core, by core index, each as of that core's last loop turn.
    pub fn snapshot(&self) -> Vec<CoreStats> {
        self.shared.stats.iter().map(|p| p.read()).collect()
    }
}

/// Starts a graceful shutdown of a runtime from any thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<RuntimeShared>,
}

impl ShutdownHandle {
    /// Asks every core to shut down: [`shutdown_signal`] resolves everywhere, in-flight work
    /// has the grace period to finish, then what remains is cancelled.
    pub fn shutdown(&self) {
        self.shared.request_shutdown();
    }

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        self.shared.shutdown_requested()
    }
}

/// Resolves when the runtime of the current core is asked to shut down. Accept loops select on
/// it to stop accepting; connection tasks may use it to finish early.
pub fn shutdown_signal() -> ShutdownSignal {
    ShutdownSignal { slot: None }
}

/// Future returned by [`shutdown_signal`]. While pending it holds one waker slot on the core
/// that polled it, freed when it is dropped, so connections that come and go leave nothing
/// behind.
#[derive(Debug)]
pub struct ShutdownSignal {
    /// The core context it registered with (by address) and its slot there.
    slot: Option<(usize, usize)>,
}

fn context_id(ctx: &context::CoreContext) -> usize {
    std::ptr::from_ref(ctx) as usize
}

impl ShutdownSignal {
    /// Runs `future` unless shutdown begins first: `Some(output)`, or `None` once shutdown is
    /// requested (the future is then dropped). The signal stays registered between calls, so a
    /// loop that guards each wait with the same signal registers once, not once per wait.
    pub async fn guard<F: Future>(&mut self, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            if is_shutting_down() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(out) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            // Only a future that waits needs waking at shutdown.
            match Pin::new(&mut *self).poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl Future for ShutdownSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        context::with_current(|ctx| {
            if ctx.shutdown_deadline.get().is_some() {
                return Poll::Ready(());
            }
            let id = context_id(ctx);
            let mut waiters = ctx.shutdown_waiters.borrow_mut();
            let mine = match self.slot {
                Some((core, key)) if core == id => waiters.get_mut(key),
                _ => None,
            };
            match mine {
                Some(w) if w.will_wake(cx.waker()) => {}
                Some(w) => w.clone_from(cx.waker()),
                None => self.slot = Some((id, waiters.insert(cx.waker().clone()))),
            }
            Poll::Pending
        })
    }
}

impl Drop for ShutdownSignal {
    fn drop(&mut self) {
        let Some((core, key)) = self.slot.take() else {
            return;
        };
        let _ = context::try_with_current(|ctx| {
            // Once shutdown has begun the slots were drained and nothing registers again, so
            // a slot still present on this core is this signal's.
            if context_id(ctx) == core && ctx.shutdown_deadline.get().is_none() {
                let mut waiters = ctx.shutdown_waiters.borrow_mut();
                if waiters.contains(key) {
                    waiters.remove(key);
                }
            }
        });
    }
}

/// Runs `future` unless the runtime starts shutting down first: `Some(output)`, or `None` once
/// shutdown is requested (the future is then dropped, cancelling what it was doing). Wrap the
/// wait for the next request or connection in it so idle work stops at once while busy work
/// finishes.
///
/// In a loop, [`ShutdownSignal::guard`] with one signal costs less: this registers a fresh
/// signal each time it has to wait.
pub async fn until_shutdown<F: Future>(future: F) -> Option<F::Output> {
    shutdown_signal().guard(future).await
}

/// Whether the current core has seen a shutdown request.
pub fn is_shutting_down() -> bool {
    context::with_current(|ctx| ctx.shutdown_deadline.get().is_some())
}

/// Index of the current core within its runtime.
pub fn core_index() -> usize {
    context::with_current(|ctx| ctx.index)
}

/// The driver the current core runs.
pub fn driver_kind() -> DriverKind {
    context::with_current(|ctx| ctx.driver.borrow().kind())
}

/// The current core's driver counters, now.
pub fn stats() -> DriverStats {
    context::with_current(|ctx| ctx.snapshot().driver)
}

/// Everything the current core counts, now.
pub fn core_stats() -> CoreStats {
    context::with_current(|ctx| ctx.snapshot())
}

/// A snapshot of the current core's buffer pool figures.
pub fn pool_stats() -> PoolStats {
    context::with_current(|ctx| ctx.pool.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[crate::test]
    fn shutdown_waiters_leave_with_their_signals() {
        // A server's connections each wait on the shutdown signal and then end; the core must
        // not keep a waker (and with it the task's memory) for every connection it ever had.
        let rt = Runtime::builder().cores(1).build().expect("runtime");
        rt.block_on(async {
            for _ in 0..1_000 {
                let task = crate::spawn_local(async {
                    until_shutdown(crate::time::sleep(std::time::Duration::from_secs(60))).await
                })
                .cancel_on_drop();
                crate::task::yield_now().await; // the task polls its signal once
                drop(task);
                crate::task::yield_now().await;
            }
            let waiting = context::with_current(|ctx| ctx.shutdown_waiters.borrow().len());
            assert_eq!(waiting, 0);
        });
    }
}
