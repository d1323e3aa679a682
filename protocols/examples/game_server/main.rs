//! An authoritative tick server: clients join one world over WebSocket (`/play`) or netcode
//! UDP (a connect token from `/token`, its client id in `X-Client-Id`; the same port over
//! UDP), send inputs, and receive the
//! world's snapshot broadcast every tick (60 Hz by default, `--tick-hz`). `/` serves a browser
//! client: one HTML page with plain JavaScript over WebSocket. Binaries convention (`--addr`,
//! `--cores`, `--driver`, one `listening on HOST:PORT` line, exit 0 on SIGTERM).
//!
//! - The world lives on core 0: a [`TickLoop`] applies the inputs that reached it, moves the
//!   players, and publishes the snapshot to the room `world`, whose members are on every core.
//!   The room conflates: a member that falls behind gets the latest snapshot, not a backlog.
//! - A player who drops keeps its place for 10 s: a WebSocket client that comes back with
//!   `/play?resume=ID-SECRET` (the words of its `welcome ID SECRET`) is the same player.
//! - Inputs are `input DX DY` (each -1, 0 or 1), as WebSocket text or netcode payloads;
//!   snapshots are `{"tick":N,"players":[[id,x,y],...]}` in a 1000 × 1000 world.
//! - `/report?...` prints `report ...` on stdout (the browser client's bot mode uses it).
//!
//! `cargo run --release -p coring-protocols --example game_server -- --addr 127.0.0.1:9003`,
//! then open http://127.0.0.1:9003/ (add `?bot=1` to watch it play by itself).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use coring::net::{TcpListener, UdpSocket};
use coring::shard::Mailbox;
use coring_cli::ExtraFlag;
use coring_protocols::http1::Response;
use coring_protocols::netcode::{self, ClientIndex, Key, TokenIssuer, TokenRequest};
use coring_protocols::rooms::{
    Delivery, Gone, Hub, Member, Membership, NetcodeMember, NetcodeOutbox, Policy, RoomConfig,
    Rooms, WsMember,
};
use coring_protocols::serve::{Router, Server};
use coring_protocols::tick::TickLoop;
use coring_protocols::udp::{self, Event};
use coring_protocols::websocket as ws;

const NAME: &str = "game_server";
const PAGE: &str = include_str!("client.html");
const PROTOCOL_ID: u64 = 0x636f_7269_6e67_0001;
/// How long a player who dropped keeps its place.
const GRACE: Duration = Duration::from_secs(10);
const WORLD: &str = "world";
const SIZE: f32 = 1000.0;
const SPEED: f32 = 2.0;

/// A member of the world: a browser or a netcode client.
enum Player {
    Ws(WsMember),
    Udp(NetcodeMember),
}

impl Member for Player {
    async fn send(&self, batch: &[Delivery]) -> Result<(), Gone> {
        match self {
            Player::Ws(m) => m.send(batch).await,
            Player::Udp(m) => m.send(batch).await,
        }
    }

    fn cut_off(&self, why: coring_protocols::rooms::CutOff) {
        if let Player::Ws(m) = self {
            m.cut_off(why);
        }
    }
}

/// What reaches the world's core.
enum ToWorld {
    Join(u64),
    Input(u64, i8, i8),
    Leave(u64),
}

/// Who may come back as whom: player id → its secret.
type Secrets = Arc<Mutex<HashMap<u64, u64>>>;

/// What every core shares.
#[derive(Clone)]
struct Game {
    hub: Hub<Player>,
    world: Mailbox<ToWorld>,
    secrets: Secrets,
    next_id: Arc<AtomicU64>,
    issuer: Arc<TokenIssuer>,
    key: Key,
    tick: Duration,
}

fn main() {
    let args = coring_cli::server_args_with(
        NAME,
        "authoritative tick server (WebSocket and netcode UDP)",
        9003,
        &[ExtraFlag {
            flag: "--tick-hz",
            env: "CORING_TICK_HZ",
            value: "HZ",
            help: "world ticks per second (default 60)",
        }],
    );
    let hz = match args.extra("--tick-hz") {
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|&n| (1..=1000).contains(&n))
            .unwrap_or_else(|| coring_cli::bad_flag(NAME, "--tick-hz: not 1 to 1000")),
        None => 60,
    };
    let runtime = coring_cli::server_runtime(NAME, &args);
    let key = Key::random();
    let game = Game {
        hub: Hub::with_config(&runtime, |_| RoomConfig {
            policy: Policy::Conflate,
            history: 0,
            member_limit: 64 << 10,
        }),
        world: Mailbox::new(&runtime, 4096),
        secrets: Arc::default(),
        next_id: Arc::new(AtomicU64::new(1)),
        issuer: Arc::new(TokenIssuer::new(PROTOCOL_ID, key.clone())),
        key,
        tick: Duration::from_nanos(1_000_000_000 / u64::from(hz)),
    };
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind(NAME, &core, args.addr, TcpListener::bind_reuseport, |l| {
            Some(l.local_addr())
        });
        // The UDP socket on the port the TCP listener got. Where SO_REUSEPORT does not exist
        // (Windows) the cores would share one socket and a session's datagrams could reach any
        // core: netcode is served on core 0 alone there.
        let serves_udp = core.index() == 0 || !cfg!(windows);
        let udp = listener.as_ref().filter(|_| serves_udp).and_then(|l| {
            UdpSocket::bind_reuseport(l.local_addr())
                .map_err(|e| eprintln!("{NAME}: core {}: udp: {e}", core.index()))
                .ok()
        });
        let game = game.clone();
        let index = core.index();
        let shutdown = core.shutdown_handle();
        async move {
            let rooms = game.hub.start();
            let Some(listener) = listener else {
                shutdown.shutdown();
                return;
            };
            if serves_udp && udp.is_none() {
                shutdown.shutdown();
                return;
            }
            let addr = listener.local_addr();
            if index == 0 {
                coring::spawn_local(world(game.clone(), rooms.clone()));
            }
            if let Some(udp) = udp {
                coring::spawn_local(netcode_players(game.clone(), rooms.clone(), udp, addr));
            }
            let router = routes(game, rooms, addr);
            Server::new(router).serve(listener).await;
        }
    });
    startup.exit(NAME, result);
}

fn routes(game: Game, rooms: Rooms<Player>, addr: SocketAddr) -> Router {
    let play = {
        let game = game.clone();
        let config = Arc::new(ws::WsConfig::default());
        move |req: coring_protocols::http1::Request, _params| {
            let (game, rooms, config) = (game.clone(), rooms.clone(), Arc::clone(&config));
            let resume = req
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("resume=")))
                .and_then(parse_resume);
            async move {
                ws::accept(&req, config, move |socket| {
                    browser_player(socket, game, rooms, resume)
                })
            }
        }
    };
    let token = move |_req, _params| {
        let game = game.clone();
        async move {
            let id = game.next_id.fetch_add(1, Ordering::Relaxed);
            let unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let request = TokenRequest {
                client_id: id,
                server_addresses: &[addr],
                expire_seconds: 60,
                timeout_seconds: 10,
                user_data: None,
            };
            match game.issuer.issue(unix, &request) {
                Ok(token) => Response::new(200)
                    .header("Content-Type", "application/octet-stream")
                    .header("X-Client-Id", id.to_string())
                    .body(Bytes::copy_from_slice(&token.to_bytes()[..])),
                Err(e) => Response::new(500).body(format!("token: {e}\n")),
            }
        }
    };
    Router::new()
        .route("GET", "/", |_req, _params| async {
            Response::new(200)
                .header("Content-Type", "text/html; charset=utf-8")
                .body(PAGE)
        })
        .route("GET", "/play", play)
        .route("GET", "/token", token)
        .route(
            "GET",
            "/report",
            |req: coring_protocols::http1::Request, _params| {
                let line = req.query().unwrap_or_default().replace('&', " ");
                async move {
                    println!("report {line}");
                    Response::new(204)
                }
            },
        )
}

/// `ID-SECRET`.
fn parse_resume(text: &str) -> Option<(u64, u64)> {
    let (id, secret) = text.split_once('-')?;
    Some((id.parse().ok()?, secret.parse().ok()?))
}

fn random_secret() -> u64 {
    // The standard library's hasher keys come from the OS's randomness.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// `input DX DY`.
fn parse_input(text: &[u8]) -> Option<(i8, i8)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut words = text.strip_prefix("input ")?.split(' ');
    let dx: i8 = words.next()?.parse().ok()?;
    let dy: i8 = words.next()?.parse().ok()?;
    Some((dx.clamp(-1, 1), dy.clamp(-1, 1)))
}

/// One browser (or any WebSocket client): welcomed, in the world's room, its inputs passed on.
async fn browser_player(
    socket: ws::WebSocket,
    game: Game,
    rooms: Rooms<Player>,
    resume: Option<(u64, u64)>,
) {
    let id_and_secret = resume.filter(|(id, secret)| {
        game.secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            == Some(secret)
    });
    let (id, secret) = id_and_secret.unwrap_or_else(|| {
        let id = game.next_id.fetch_add(1, Ordering::Relaxed);
        let secret = random_secret();
        game.secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, secret);
        (id, secret)
    });
    let (mut reader, writer) = socket.split();
    let welcome = ws::Message::Text(Bytes::from(format!("welcome {id} {secret}")));
    if writer.send(&welcome).await.is_err() {
        return;
    }
    tell_world(&game, ToWorld::Join(id));
    let membership = rooms.join(WORLD, Player::Ws(WsMember::text(writer)), None);
    while let Ok(Some(message)) = reader.recv().await {
        if let Some((dx, dy)) = parse_input(message.bytes()) {
            tell_world(&game, ToWorld::Input(id, dx, dy));
        }
    }
    drop(membership);
    tell_world(&game, ToWorld::Leave(id));
}

fn tell_world(game: &Game, msg: ToWorld) {
    if game.world.try_send(0, msg).is_err() {
        tracing::warn!("the world's mailbox is full: a player's message was not taken");
    }
}

/// netcode clients on this core's UDP socket: each session a member of the world.
async fn netcode_players(game: Game, rooms: Rooms<Player>, socket: UdpSocket, addr: SocketAddr) {
    let mut config = netcode::ServerConfig::new(PROTOCOL_ID, game.key.clone());
    config.public_addresses = vec![addr];
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let server = netcode::Server::new(config, coring::time::now(), unix);
    let outbox = NetcodeOutbox::new();
    let mut players: HashMap<ClientIndex, (u64, Membership<Player>)> = HashMap::new();
    // The outbox goes out at twice the world's rate: a snapshot waits half a tick at most.
    let flush_every = game.tick / 2;
    udp::serve_with_tick(
        socket,
        server,
        Some(flush_every),
        |sessions, event| match event {
            Event::Connected {
                client, client_id, ..
            } => {
                tell_world(&game, ToWorld::Join(client_id));
                let member = Player::Udp(outbox.member(client));
                players.insert(client, (client_id, rooms.join(WORLD, member, None)));
            }
            Event::Payload { client, data } => {
                if let (Some((id, _)), Some((dx, dy))) = (players.get(&client), parse_input(data)) {
                    tell_world(&game, ToWorld::Input(*id, dx, dy));
                }
            }
            Event::Disconnected { client, .. } => {
                if let Some((id, _membership)) = players.remove(&client) {
                    tell_world(&game, ToWorld::Leave(id));
                }
            }
            Event::Moved { .. } => {}
            Event::Tick => {
                outbox.flush(sessions);
            }
        },
    )
    .await;
}

struct State {
    x: f32,
    y: f32,
    dx: i8,
    dy: i8,
    gone_since: Option<Instant>,
}

/// The world, on core 0: inputs in, a snapshot out every tick.
async fn world(game: Game, rooms: Rooms<Player>) {
    let mut players: HashMap<u64, State> = HashMap::new();
    let mut ticks = TickLoop::every(game.tick);
    let mut snapshot = String::new();
    let mut last_report = Instant::now();
    while !coring::runtime::is_shutting_down() {
        let tick = ticks.next().await;
        while let Some(msg) = game.world.try_recv() {
            match msg {
                ToWorld::Join(id) => {
                    let p = players.entry(id).or_insert(State {
                        x: SIZE / 2.0,
                        y: SIZE / 2.0,
                        dx: 0,
                        dy: 0,
                        gone_since: None,
                    });
                    p.gone_since = None;
                }
                ToWorld::Input(id, dx, dy) => {
                    if let Some(p) = players.get_mut(&id) {
                        (p.dx, p.dy) = (dx, dy);
                    }
                }
                ToWorld::Leave(id) => {
                    if let Some(p) = players.get_mut(&id) {
                        p.gone_since = Some(tick.fired);
                    }
                }
            }
        }
        players.retain(|id, p| {
            let keep = p.gone_since.is_none_or(|t| tick.fired - t < GRACE);
            if !keep {
                game.secrets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
            }
            keep
        });
        snapshot.clear();
        snapshot.push_str(&format!("{{\"tick\":{},\"players\":[", tick.index));
        let mut first = true;
        for (id, p) in players.iter_mut() {
            if p.gone_since.is_none() {
                p.x = (p.x + f32::from(p.dx) * SPEED).clamp(0.0, SIZE);
                p.y = (p.y + f32::from(p.dy) * SPEED).clamp(0.0, SIZE);
            }
            if !first {
                snapshot.push(',');
            }
            first = false;
            snapshot.push_str(&format!("[{id},{:.0},{:.0}]", p.x, p.y));
        }
        snapshot.push_str("]}");
        // Snapshots supersede each other: one key, so a member behind gets only the latest.
        rooms.publish_keyed(WORLD, Some(0), Bytes::from(snapshot.clone()));
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let s = ticks.stats();
            tracing::info!(
                ticks = s.ticks,
                overruns = s.overruns,
                late = s.late,
                p99_lateness_us = s.lateness_us(0.99),
                p99_work_us = s.work_us(0.99),
                "tick loop"
            );
        }
    }
}
