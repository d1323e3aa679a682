//! The driver of the core running on this thread: what every op and descriptor on it talks
//! to. The runtime makes a core's driver current while the core runs ([`enter`]); the driver
//! module finds it here, without knowing the runtime.

use std::cell::RefCell;
use std::rc::Rc;

use super::Driver;

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<Driver>>>> = const { RefCell::new(None) };
}

/// Makes `driver` this thread's driver until the guard drops.
///
/// The guard must drop before the core's other parts (its buffer pool): the core then holds
/// the last reference, and drops the driver (closing its ring) first.
pub(crate) fn enter(driver: Rc<RefCell<Driver>>) -> Entered {
    CURRENT.with(|c| {
        let prev = c.borrow_mut().replace(driver);
        assert!(
            prev.is_none(),
            "a coring driver is already current on this thread"
        );
    });
    Entered(())
}

/// Keeps a driver current; see [`enter`].
pub(crate) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        let driver = CURRENT.with(|c| c.borrow_mut().take());
        drop(driver);
    }
}

/// Runs `f` with this thread's driver.
///
/// # Panics
///
/// Off a coring core, or when called from inside another `with`.
pub(crate) fn with<R>(f: impl FnOnce(&mut Driver) -> R) -> R {
    CURRENT.with(|c| {
        let current = c.borrow();
        let driver = current
            .as_ref()
            .expect("this must be called on a coring core (inside Runtime::run or block_on)");
        let mut driver = driver.borrow_mut();
        f(&mut driver)
    })
}

/// Runs `f` with this thread's driver if there is one and it is free (not torn down, not
/// borrowed by a caller up the stack).
pub(crate) fn try_with<R>(f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| {
            let current = c.try_borrow().ok()?;
            let mut driver = current.as_ref()?.try_borrow_mut().ok()?;
            Some(f(&mut driver))
        })
        .ok()
        .flatten()
}
