//! Chat rooms over WebSocket. A client that connects to `ws://HOST:PORT/ROOM` joins ROOM;
//! every text message a member sends is delivered unchanged to every member of that room, the
//! sender included, in one order all members see, whichever cores they landed on (`--cores`).
//! Binaries convention (`--addr`, `--cores`, `--driver`, one `listening on HOST:PORT` line,
//! exit 0 on SIGTERM).
//!
//! Rooms are ordered (the default policy): a member that stops reading stops getting new
//! messages once 1 MiB is waiting for it, catches up from the room's last 1,024 messages when
//! it reads again, and is closed with 1013 if it fell further behind than that.
//!
//! `cargo run --release -p coring-protocols --example chat -- --addr 127.0.0.1:9002 --cores 2`

use std::sync::Arc;

use coring::net::TcpListener;
use coring_protocols::rooms::{Hub, Rooms, WsMember};
use coring_protocols::serve::{Router, Server};
use coring_protocols::websocket as ws;

fn main() {
    let args = coring_cli::server_args("chat", "Chat rooms over WebSocket", 9002);
    let runtime = coring_cli::server_runtime("chat", &args);
    let hub: Hub<WsMember> = Hub::new(&runtime);
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind("chat", &core, args.addr, TcpListener::bind_reuseport, |l| {
            Some(l.local_addr())
        });
        let hub = hub.clone();
        async move {
            let rooms = hub.start();
            let Some(listener) = listener else {
                return;
            };
            let config = Arc::new(ws::WsConfig::default());
            let router = Router::new().route("GET", "/:room", move |req, params| {
                let config = Arc::clone(&config);
                let rooms = rooms.clone();
                let room = params.get("room").unwrap_or_default().to_owned();
                async move { ws::accept(&req, config, move |socket| member(socket, rooms, room)) }
            });
            Server::new(router).serve(listener).await;
        }
    });
    startup.exit("chat", result);
}

/// One member: joins its room, publishes what it says, leaves when it goes.
async fn member(socket: ws::WebSocket, rooms: Rooms<WsMember>, room: String) {
    let (mut reader, writer) = socket.split();
    let _membership = rooms.join(&room, WsMember::text(writer), None);
    loop {
        match reader.recv().await {
            Ok(Some(ws::Message::Text(text))) => rooms.publish(&room, text),
            // A chat carries text; anything else is ignored.
            Ok(Some(ws::Message::Binary(_))) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "chat session failed");
                return;
            }
        }
    }
}
