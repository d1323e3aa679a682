//! What starts a graceful shutdown from outside: SIGINT and SIGTERM on Unix (a helper thread
//! waits for them), console control events on Windows (Ctrl+C, Ctrl+Break, the console
//! closing; see `console`). SIGHUP (Unix) starts a restart (`crate::restart`).

use crate::error::{Error, Result};

cfg_select! {
    unix => {
        /// Calls `shutdown` (from a helper thread) on the first SIGINT or SIGTERM.
        pub(crate) fn on_shutdown_signal(shutdown: impl Fn() + Send + 'static) -> Result<()> {
            use signal_hook::consts::{SIGINT, SIGTERM};
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
                .map_err(|e| Error::from_io(e, "sigaction"))?;
            std::thread::Builder::new()
                .name("coring-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        tracing::info!(signal = sig, "shutdown requested by signal");
                        shutdown();
                    }
                })
                .map_err(|e| Error::from_io(e, "spawn signal thread"))?;
            Ok(())
        }
    }
    windows => {
        /// Calls `shutdown` (from the thread the system makes for it) on the next console
        /// control event.
        pub(crate) fn on_shutdown_signal(shutdown: impl Fn() + Send + 'static) -> Result<()> {
            super::console::on_ctrl(Box::new(shutdown))
                .map_err(|e| Error::from_io(e, "SetConsoleCtrlHandler"))
        }
    }
    _ => {
        compile_error!("coring has no shutdown signals for this platform");
    }
}

/// Calls `each` (from a helper thread) on every SIGHUP, one call at a time.
#[cfg(unix)]
pub(crate) fn on_hangup(mut each: impl FnMut() + Send + 'static) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| Error::from_io(e, "sigaction(SIGHUP)"))?;
    std::thread::Builder::new()
        .name("coring-hangup".into())
        .spawn(move || {
            for _ in signals.forever() {
                tracing::info!("restart requested by SIGHUP");
                each();
            }
        })
        .map_err(|e| Error::from_io(e, "spawn signal thread"))?;
    Ok(())
}
