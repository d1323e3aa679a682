//! What `#[coring::test]` expands to (hidden; the macro is the interface).
//!
//! Each generated case names its driver here. Runtimes built on the test's thread without an
//! explicit [`crate::Builder::driver`] then run on it: the builder asks `case_driver` before
//! `CORING_DRIVER`. The choice is thread-local because the test harness runs tests on
//! parallel threads, each of them one case.

use std::cell::Cell;
use std::future::Future;

use crate::driver::probe::DriverChoice;
use crate::runtime::{Builder, Runtime};

thread_local! {
    static CASE_DRIVER: Cell<Option<DriverChoice>> = const { Cell::new(None) };
}

/// The driver of the test case running on this thread, if any.
pub(crate) fn case_driver() -> Option<DriverChoice> {
    CASE_DRIVER.with(Cell::get)
}

/// Restores the thread's previous case driver, also when the test panics.
struct Scope(Option<DriverChoice>);

impl Scope {
    fn enter(driver: DriverChoice) -> Scope {
        Scope(CASE_DRIVER.with(|c| c.replace(Some(driver))))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CASE_DRIVER.with(|c| c.set(self.0));
    }
}

/// Runtime settings of an async test case.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    cores: Option<usize>,
    pool: Option<(u16, usize)>,
}

impl Settings {
    /// The body runs on core 0 of `n`; the others serve cross-core work.
    pub fn cores(mut self, n: usize) -> Settings {
        self.cores = Some(n);
        self
    }

    /// Each core's receive-buffer pool (`0` keeps that half of the default).
    pub fn buffer_pool(mut self, buffers: u16, bytes: usize) -> Settings {
        self.pool = Some((buffers, bytes));
        self
    }

    fn builder(&self, driver: DriverChoice) -> Builder {
        let mut b = Runtime::builder().driver(driver);
        if let Some(n) = self.cores {
            b = b.cores(n);
        }
        if let Some((buffers, bytes)) = self.pool {
            let buffers = if buffers == 0 {
                crate::buf::DEFAULT_POOL_BUFFERS
            } else {
                buffers
            };
            let bytes = if bytes == 0 {
                crate::buf::DEFAULT_POOL_BUFFER_BYTES
            } else {
                bytes
            };
            b = b.buffer_pool(buffers, bytes);
        }
        b
    }
}

/// Runs `body`, holding the process's one test lock when `serial`.
pub fn serialized<T>(serial: bool, body: impl FnOnce() -> T) -> T {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A case that panicked while holding the lock leaves nothing behind that the next needs.
    let _guard = serial.then(|| SERIAL.lock().unwrap_or_else(|e| e.into_inner()));
    body()
}

/// Runs a sync test body with `driver` as the thread's default.
pub fn run_sync<T>(driver: DriverChoice, body: impl FnOnce() -> T) -> T {
    let _scope = Scope::enter(driver);
    body()
}

/// Runs an async test body on a fresh runtime of `driver`: on core 0 when there are several.
///
/// # Panics
///
/// When the runtime cannot start (an io_uring case where io_uring is unusable fails here,
/// it does not quietly run on compat) or when the body panics.
pub fn run_async<F, Fut>(driver: DriverChoice, settings: Settings, body: F) -> Fut::Output
where
    F: Fn() -> Fut + Sync,
    Fut: Future + 'static,
    Fut::Output: 'static + Send,
{
    let _scope = Scope::enter(driver);
    let rt = match settings.builder(driver).build() {
        Ok(rt) => rt,
        Err(e) => panic!("coring test runtime ({driver:?}) unavailable: {e}"),
    };
    if settings.cores.unwrap_or(1) <= 1 {
        return rt.block_on(body());
    }
    let out = std::sync::Arc::new(std::sync::Mutex::new(None));
    let run = rt.run(|core| {
        let first = core.index() == 0;
        let fut = first.then(&body);
        let out = std::sync::Arc::clone(&out);
        async move {
            if let Some(fut) = fut {
                let v = fut.await;
                *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
            }
        }
    });
    if let Err(e) = run {
        panic!("coring test runtime ({driver:?}) failed: {e}");
    }
    let v = out.lock().unwrap_or_else(|e| e.into_inner()).take();
    match v {
        Some(v) => v,
        None => panic!("the test body did not finish on core 0"),
    }
}

/// A name no other test case of this process uses: `coring-{pid}-{n}-{tag}` (the two cases of
/// one test run at once and must not share paths or abstract socket names).
pub fn unique(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("coring-{}-{n}-{tag}", std::process::id())
}
