//! netcode sessions as room members.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;

use super::{Delivery, Gone, Member};
use crate::netcode::ClientIndex;
use crate::udp::Sessions;

/// The room messages waiting for one core's netcode sessions. Members queue into it (each
/// message one payload); the core's UDP loop sends what waits with [`NetcodeOutbox::flush`]
/// from its [`Event::Tick`](crate::udp::Event::Tick) (`udp::serve_with_tick`), all of a tick's
/// datagrams in one batch. A datagram is not held back by the ones before it, so a member's
/// write is done once its messages are queued here.
#[derive(Clone, Debug, Default)]
pub struct NetcodeOutbox {
    queue: Rc<RefCell<Vec<(ClientIndex, Bytes)>>>,
}

/// A netcode session in a room (see [`NetcodeOutbox`]).
#[derive(Clone, Debug)]
pub struct NetcodeMember {
    client: ClientIndex,
    outbox: NetcodeOutbox,
}

impl NetcodeOutbox {
    /// An empty outbox.
    pub fn new() -> NetcodeOutbox {
        NetcodeOutbox::default()
    }

    /// A member for session `client`.
    pub fn member(&self, client: ClientIndex) -> NetcodeMember {
        NetcodeMember {
            client,
            outbox: self.clone(),
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Sends everything waiting through the UDP loop's `sessions`; returns how many messages
    /// could not be sent (the session ended, or the payload is larger than a packet takes).
    pub fn flush(&self, sessions: &mut Sessions<'_>) -> usize {
        let waiting = std::mem::take(&mut *self.queue.borrow_mut());
        let mut failed = 0;
        for (client, payload) in waiting {
            if let Err(e) = sessions.send(client, &payload) {
                tracing::debug!(error = %e, "room message to a netcode session not sent");
                failed += 1;
            }
        }
        failed
    }
}

impl NetcodeMember {
    /// The session's slot.
    pub fn client(&self) -> ClientIndex {
        self.client
    }
}

impl Member for NetcodeMember {
    async fn send(&self, batch: &[Delivery]) -> Result<(), Gone> {
        self.outbox
            .queue
            .borrow_mut()
            .extend(batch.iter().map(|d| (self.client, d.payload.clone())));
        Ok(())
    }
}
