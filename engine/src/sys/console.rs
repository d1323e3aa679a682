//! Console control events (Ctrl+C, Ctrl+Break, closing the console): Windows' stand-in for
//! SIGINT and SIGTERM.

use std::sync::Mutex;

use windows_sys::Win32::Foundation::{FALSE, TRUE};
use windows_sys::Win32::System::Console::{
    CTRL_BREAK_EVENT, CTRL_C_EVENT, CTRL_CLOSE_EVENT, SetConsoleCtrlHandler,
};
use windows_sys::core::BOOL;

/// What to call on the next control event (one per runtime that asked).
static HANDLES: Mutex<Vec<Box<dyn Fn() + Send>>> = Mutex::new(Vec::new());

/// Calls `shutdown` on the next control event.
pub(crate) fn on_ctrl(shutdown: Box<dyn Fn() + Send>) -> std::io::Result<()> {
    let mut handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
    if handles.is_empty() {
        // SAFETY: registers a handler with the signature the system calls; it stays valid for
        // the life of the process (a plain function).
        if unsafe { SetConsoleCtrlHandler(Some(handler), TRUE) } == FALSE {
            return Err(std::io::Error::last_os_error());
        }
    }
    handles.push(shutdown);
    Ok(())
}

/// Runs on a thread the system creates for the event.
unsafe extern "system" fn handler(event: u32) -> BOOL {
    match event {
        CTRL_C_EVENT | CTRL_BREAK_EVENT | CTRL_CLOSE_EVENT => {
            tracing::info!(event, "shutdown requested by console control event");
            let handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
            for shutdown in handles.iter() {
                shutdown();
            }
            TRUE
        }
        _ => FALSE,
    }
}
