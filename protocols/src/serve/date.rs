//! The `Date` header value, formatted once per second per core.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime};

/// `Sun, 06 Nov 1994 08:49:37 GMT` is 29 bytes.
const DATE_LEN: usize = 29;

struct Cached {
    value: [u8; DATE_LEN],
    /// When the value goes stale (`None`: never formatted).
    stale_at: Option<Instant>,
}

thread_local! {
    static DATE: RefCell<Cached> = const {
        RefCell::new(Cached {
            value: [b' '; DATE_LEN],
            stale_at: None,
        })
    };
}

/// Calls `f` with the core's clock and the current `Date` value, reformatting it when the
/// clock has moved a second or more since the last time.
pub(crate) fn with_date<R>(f: impl FnOnce(Instant, &[u8]) -> R) -> R {
    let now = coring::time::now();
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        // One comparison per response; the formatting happens once a second.
        if cached.stale_at.is_none_or(|at| now >= at) {
            let text = httpdate::fmt_http_date(SystemTime::now());
            if text.len() == DATE_LEN {
                cached.value.copy_from_slice(text.as_bytes());
            }
            cached.stale_at = Some(now + Duration::from_secs(1));
        }
        f(now, &cached.value)
    })
}
