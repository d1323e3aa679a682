//! What starts a graceful shutdown from outside: SIGINT and SIGTERM on Unix (a helper thread
//! waits for them), console control events on Windows (Ctrl+C, Ctrl+Break, the console
//! closing; see `console`).

use crate::error::{Error, Result};
use crate::runtime::ShutdownHandle;

cfg_select! {
    unix => {
        /// Shuts `handle`'s runtime down on the first SIGINT or SIGTERM.
        pub(crate) fn shutdown_on_signals(handle: ShutdownHandle) -> Result<()> {
            use signal_hook::consts::{SIGINT, SIGTERM};
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
                .map_err(|e| Error::from_io(e, "sigaction"))?;
            std::thread::Builder::new()
                .name("coring-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        tracing::info!(signal = sig, "shutdown requested by signal");
                        handle.shutdown();
                    }
                })
                .map_err(|e| Error::from_io(e, "spawn signal thread"))?;
            Ok(())
        }
    }
    windows => {
        /// Shuts `handle`'s runtime down on the next console control event.
        pub(crate) fn shutdown_on_signals(handle: ShutdownHandle) -> Result<()> {
            super::console::on_ctrl(handle).map_err(|e| Error::from_io(e, "SetConsoleCtrlHandler"))
        }
    }
    _ => {
        compile_error!("coring has no shutdown signals for this platform");
    }
}
