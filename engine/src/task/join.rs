//! Handles to spawned tasks.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_task::FallibleTask;

use crate::task::coop;

/// Why a task produced no value.
pub enum JoinError {
    /// The task was cancelled: aborted, or still running when its core shut down.
    Cancelled,
    /// The task panicked; the payload is the panic's.
    Panicked(Box<dyn Any + Send + 'static>),
}

impl JoinError {
    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("JoinError::Cancelled"),
            JoinError::Panicked(p) => write!(f, "JoinError::Panicked({:?})", panic_message(&**p)),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("task was cancelled"),
            JoinError::Panicked(p) => write!(f, "task panicked: {}", panic_message(&**p)),
        }
    }
}

impl std::error::Error for JoinError {}

/// The text a panic's payload carries (`panic!` with a literal or a formatted message), or
/// a placeholder for any other payload.
pub fn panic_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

/// An owned permission to await a task's result.
///
/// Dropping the handle detaches the task (it keeps running), as with std threads and tokio;
/// [`JoinHandle::cancel_on_drop`] makes dropping cancel it instead, and [`JoinHandle::abort`]
/// cancels it at once.
pub struct JoinHandle<T> {
    task: Option<FallibleTask<Result<T, JoinError>>>,
    cancel_on_drop: bool,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: async_task::Task<Result<T, JoinError>>) -> Self {
        JoinHandle {
            task: Some(task.fallible()),
            cancel_on_drop: false,
        }
    }

    /// Makes dropping this handle cancel the task.
    pub fn cancel_on_drop(mut self) -> Self {
        self.cancel_on_drop = true;
        self
    }

    /// Cancels the task. Its future is dropped (at its next scheduling point if it is running
    /// now); awaiting the handle afterwards yields [`JoinError::Cancelled`].
    pub fn abort(&mut self) {
        self.task = None;
    }

    /// Whether the task has finished (returned, panicked, or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(task) = this.task.as_mut() else {
            return Poll::Ready(Err(JoinError::Cancelled));
        };
        if coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        match Pin::new(task).poll(cx) {
            Poll::Ready(out) => {
                this.task = None;
                Poll::Ready(out.unwrap_or(Err(JoinError::Cancelled)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take()
            && !self.cancel_on_drop
        {
            task.detach();
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .field("cancel_on_drop", &self.cancel_on_drop)
            .finish()
    }
}
