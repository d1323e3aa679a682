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
//! With `--nats HOST:PORT` the rooms span every chat process bridged through that NATS server:
//! each process publishes a message once (subject `rooms.ROOM`) and publishes what the others
//! send to its own members; each sender's order is kept. `GET /stats` shows the bridge's
//! counters.
//!
//! `cargo run --release -p coring-protocols --example chat -- --addr 127.0.0.1:9002 --cores 2`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use coring::net::TcpListener;
use coring_cli::ExtraFlag;
use coring_protocols::http1::Response;
use coring_protocols::rooms::{Bridge, BridgeConfig, Hub, Rooms, WsMember};
use coring_protocols::serve::{Router, Server};
use coring_protocols::websocket as ws;

fn main() {
    let args = coring_cli::server_args_with(
        "chat",
        "Chat rooms over WebSocket",
        9002,
        &[ExtraFlag {
            flag: "--nats",
            env: "CORING_NATS",
            value: "HOST:PORT",
            help: "bridge the rooms to other chat processes through this NATS server",
        }],
    );
    let nats: Option<SocketAddr> = args.extra("--nats").map(|a| {
        a.parse()
            .unwrap_or_else(|_| coring_cli::bad_flag("chat", "--nats: not HOST:PORT"))
    });
    let runtime = coring_cli::server_runtime("chat", &args);
    let hub: Hub<WsMember> = Hub::new(&runtime);
    let bridge = nats.map(|addr| (Bridge::new(&runtime, 0), BridgeConfig::new(addr)));
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind("chat", &core, args.addr, TcpListener::bind_reuseport, |l| {
            Some(l.local_addr())
        });
        let hub = hub.clone();
        let bridge = bridge.clone();
        let index = core.index();
        async move {
            let rooms = hub.start();
            let Some(listener) = listener else {
                return;
            };
            if index == 0
                && let Some((bridge, config)) = bridge.clone()
            {
                let rooms = rooms.clone();
                coring::spawn_local(async move { bridge.run(rooms, config).await });
            }
            let bridge = bridge.map(|(b, _)| b);
            let config = Arc::new(ws::WsConfig::default());
            let stats = bridge.clone();
            let router = Router::new()
                .route("GET", "/stats", move |_req, _params| {
                    let text = stats.as_ref().map_or_else(
                        || "no bridge\n".to_owned(),
                        |b| {
                            let c = b.counters();
                            format!(
                                "connected={} connects={} published={} received={} missed={} duplicates={} dropped={}\n",
                                c.connected.load(Relaxed),
                                c.connects.load(Relaxed),
                                c.published.load(Relaxed),
                                c.received.load(Relaxed),
                                c.missed.load(Relaxed),
                                c.duplicates.load(Relaxed),
                                c.dropped.load(Relaxed),
                            )
                        },
                    );
                    async move { Response::new(200).body(text) }
                })
                .route("GET", "/:room", move |req, params| {
                    let config = Arc::clone(&config);
                    let (rooms, bridge) = (rooms.clone(), bridge.clone());
                    let room = params.get("room").unwrap_or_default().to_owned();
                    async move {
                        ws::accept(&req, config, move |socket| {
                            member(socket, rooms, bridge, room)
                        })
                    }
                });
            Server::new(router).serve(listener).await;
        }
    });
    startup.exit("chat", result);
}

/// One member: joins its room, publishes what it says, leaves when it goes.
async fn member(
    socket: ws::WebSocket,
    rooms: Rooms<WsMember>,
    bridge: Option<Bridge>,
    room: String,
) {
    let (mut reader, writer) = socket.split();
    let _membership = rooms.join(&room, WsMember::text(writer), None);
    loop {
        match reader.recv().await {
            Ok(Some(ws::Message::Text(text))) => match &bridge {
                Some(bridge) => bridge.publish(&rooms, &room, text),
                None => rooms.publish(&room, text),
            },
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
