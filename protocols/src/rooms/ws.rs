//! WebSocket sessions as room members.

use super::{CutOff, Delivery, Gone, Member};
use crate::websocket::WsWriter;
use crate::ws::Message;

/// A WebSocket session in a room: each message goes out as one text or binary frame (its
/// payload as published; a text room's publishers send UTF-8), a turn's messages in one write.
/// Cut off by its room's policy, the session closes with 1013 (try again later).
#[derive(Debug, Clone)]
pub struct WsMember {
    writer: WsWriter,
    text: bool,
}

impl WsMember {
    /// A member whose messages go out as text frames.
    pub fn text(writer: WsWriter) -> WsMember {
        WsMember { writer, text: true }
    }

    /// A member whose messages go out as binary frames.
    pub fn binary(writer: WsWriter) -> WsMember {
        WsMember {
            writer,
            text: false,
        }
    }

    /// The session's writer.
    pub fn writer(&self) -> &WsWriter {
        &self.writer
    }
}

/// Close code for a member the room cut off: try again later.
const CUT_OFF: u16 = 1013;

impl Member for WsMember {
    async fn send(&self, batch: &[Delivery]) -> Result<(), Gone> {
        let text = self.text;
        let messages = batch.iter().map(|d| {
            if text {
                Message::Text(d.payload.clone())
            } else {
                Message::Binary(d.payload.clone())
            }
        });
        self.writer.inner.send_all(messages).await.map_err(|_| Gone)
    }

    fn cut_off(&self, why: CutOff) {
        tracing::debug!(%why, "room member cut off");
        self.writer.inner.cut_off(CUT_OFF);
    }
}
