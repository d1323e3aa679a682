//! [`WsSender`]: sending to one session from any core or thread.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Weak;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use super::Message;
use super::session::Inner;

/// A handle that sends to one session from any core or thread (it is `Send + Sync`; clone it
/// freely). Messages cross to the session's core through a queue bounded in bytes (the same
/// bound as the session's outbound queue) and wake its core with one doorbell, where a task
/// frames them and queues them for the socket in the order they were sent. A full queue is
/// backpressure: [`WsSender::try_send`] gives the message back, [`WsSender::send`] waits;
/// nothing is dropped silently. A message accepted before the session closed is written
/// unless the connection fails first, as with any socket.
#[derive(Clone)]
pub struct WsSender {
    remote: Arc<Remote>,
}

impl std::fmt::Debug for WsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSender")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// Why [`WsSender::try_send`] did not take a message; it is given back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// The queue to the session's core is full.
    #[error("the session's queue is full")]
    Full(Message),
    /// The session is closed.
    #[error("the session is closed")]
    Closed(Message),
}

impl TrySendError {
    /// The message that was not sent.
    pub fn into_inner(self) -> Message {
        match self {
            TrySendError::Full(m) | TrySendError::Closed(m) => m,
        }
    }
}

/// What the senders and the session's core share.
pub(crate) struct Remote {
    state: Mutex<State>,
    limit: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    bytes: usize,
    closed: bool,
    /// The session core's task that takes the messages.
    drain: Option<Waker>,
    /// Senders waiting for room.
    room: Vec<Waker>,
}

impl Remote {
    pub(crate) fn new(limit: usize) -> Arc<Remote> {
        Arc::new(Remote {
            state: Mutex::new(State::default()),
            limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a message of `len` bytes fits the queue (one larger than the whole limit fits
    /// an empty queue, or it could never be sent).
    fn fits(&self, st: &State, len: usize) -> bool {
        st.bytes == 0 || st.bytes + len <= self.limit
    }

    /// The session is over: senders fail from now on, and everyone waiting is told.
    pub(crate) fn close(&self) {
        let (drain, room) = {
            let mut st = self.lock();
            st.closed = true;
            (st.drain.take(), std::mem::take(&mut st.room))
        };
        drain.into_iter().chain(room).for_each(Waker::wake);
    }

    /// `bytes` were taken off the queue by the session's core.
    fn release(&self, bytes: usize) {
        let room = {
            let mut st = self.lock();
            st.bytes = st.bytes.saturating_sub(bytes);
            std::mem::take(&mut st.room)
        };
        room.into_iter().for_each(Waker::wake);
    }
}

impl WsSender {
    pub(crate) fn new(remote: Arc<Remote>) -> WsSender {
        WsSender { remote }
    }

    /// Sends `message` if the queue has room; gives it back otherwise.
    pub fn try_send(&self, message: Message) -> Result<(), TrySendError> {
        let drain = {
            let mut st = self.remote.lock();
            if st.closed {
                return Err(TrySendError::Closed(message));
            }
            let len = message.bytes().len();
            if !self.remote.fits(&st, len) {
                return Err(TrySendError::Full(message));
            }
            st.bytes += len;
            st.queue.push_back(message);
            st.drain.take()
        };
        if let Some(w) = drain {
            w.wake();
        }
        Ok(())
    }

    /// Sends `message`, waiting while the queue is full; gives it back if the session closed.
    pub async fn send(&self, message: Message) -> Result<(), Message> {
        let mut message = Some(message);
        poll_fn(|cx| {
            let Some(m) = message.take() else {
                return Poll::Ready(Ok(()));
            };
            match self.try_send(m) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed(m)) => Poll::Ready(Err(m)),
                Err(TrySendError::Full(m)) => {
                    let mut st = self.remote.lock();
                    if st.closed || self.remote.fits(&st, m.bytes().len()) {
                        // Room (or the end) came while the lock was let go: try again.
                        cx.waker().wake_by_ref();
                    } else {
                        st.room.push(cx.waker().clone());
                    }
                    message = Some(m);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Whether the session is closed (sends fail).
    pub fn is_closed(&self) -> bool {
        self.remote.lock().closed
    }
}

/// The session core's side: takes what senders queued and sends it through the session, in
/// order, until the session is gone.
pub(crate) async fn drain(session: Weak<Inner>, remote: Arc<Remote>) {
    loop {
        let batch = poll_fn(|cx| {
            let mut st = remote.lock();
            if !st.queue.is_empty() {
                return Poll::Ready(Some(std::mem::take(&mut st.queue)));
            }
            if st.closed {
                return Poll::Ready(None);
            }
            st.drain = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(batch) = batch else {
            return;
        };
        for message in batch {
            let len = message.bytes().len();
            let sent = match session.upgrade() {
                Some(inner) => inner.send(&message).await.is_ok(),
                None => false,
            };
            remote.release(len);
            if !sent {
                remote.close();
                return;
            }
        }
    }
}
