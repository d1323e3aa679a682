//! netcode echo server: any netcode 1.02 client holding a connect token made with this server's
//! private key and protocol id connects to `--addr`, and every payload it sends comes back to
//! it unchanged on the same session. One SO_REUSEPORT socket and one session table per core;
//! the binaries convention (`--addr`, `--cores`, `--driver`, one `listening on HOST:PORT`
//! line, exit 0 on SIGTERM after telling every client). With `--resumption on` sessions follow
//! their clients to new addresses (clients must enable it too), across cores. With
//! `--cookies always` or `--cookies N` requests must carry an address cookie (always, or once
//! N tokens a second are being opened) before their token is opened (clients must enable
//! cookies too; standard clients connect whenever the server is not asking).
//!
//! `cargo run --release -p coring-protocols --example netcode_echo -- --addr 127.0.0.1:40000
//! --private-key $(openssl rand -hex 32) --protocol-id 0x1122334455667788`

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use coring::net::UdpSocket;
use coring_cli::ExtraFlag;
use coring_protocols::netcode::{Cookies, Key, Server, ServerConfig};
use coring_protocols::udp::{self, Event};

const NAME: &str = "netcode_echo";

fn main() {
    let args = coring_cli::server_args_with(
        NAME,
        "netcode 1.02 echo server",
        40000,
        &[
            ExtraFlag {
                flag: "--private-key",
                env: "CORING_PRIVATE_KEY",
                value: "HEX",
                help: "the 32-byte key tokens are sealed under, as 64 hex digits",
            },
            ExtraFlag {
                flag: "--protocol-id",
                env: "CORING_PROTOCOL_ID",
                value: "HEX",
                help: "the protocol id tokens name, a u64 in hex (0x optional)",
            },
            ExtraFlag {
                flag: "--resumption",
                env: "CORING_RESUMPTION",
                value: "on|off",
                help: "session resumption (not in the standard; clients must enable it too)",
            },
            ExtraFlag {
                flag: "--cookies",
                env: "CORING_COOKIES",
                value: "off|always|N",
                help: "address cookies before any token is opened: never, always, or once N a second are opened (not in the standard)",
            },
            ExtraFlag {
                flag: "--max-clients",
                env: "CORING_MAX_CLIENTS",
                value: "N",
                help: "session slots per core (default 256)",
            },
        ],
    );
    let key = match args.extra("--private-key") {
        Some(hex) => Key::from_hex(hex)
            .unwrap_or_else(|| coring_cli::bad_flag(NAME, "--private-key: not 64 hex digits")),
        None => coring_cli::bad_flag(NAME, "--private-key HEX is required"),
    };
    let protocol_id = match args.extra("--protocol-id") {
        Some(hex) => u64::from_str_radix(hex.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| coring_cli::bad_flag(NAME, "--protocol-id: not a hex u64")),
        None => coring_cli::bad_flag(NAME, "--protocol-id HEX is required"),
    };
    let max_clients = match args.extra("--max-clients") {
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| coring_cli::bad_flag(NAME, "--max-clients: not a positive number")),
        None => 256,
    };
    let cookies = match args.extra("--cookies") {
        None | Some("off") => Cookies::Off,
        Some("always") => Cookies::Always,
        Some(n) => match n.parse::<u32>() {
            Ok(opens_per_second) if opens_per_second > 0 => Cookies::UnderLoad { opens_per_second },
            _ => coring_cli::bad_flag(
                NAME,
                &format!("--cookies: {n:?} is not off, always or a positive number"),
            ),
        },
    };
    let resumption = match args.extra("--resumption") {
        None | Some("off") => false,
        Some("on") => true,
        Some(other) => {
            coring_cli::bad_flag(NAME, &format!("--resumption: {other:?} is not on or off"))
        }
    };
    let runtime = coring_cli::server_runtime(NAME, &args);
    // Sessions that move to an address the kernel sends to another core are routed there.
    let shards = resumption.then(|| udp::Shards::new(&runtime));
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let socket = startup.bind(NAME, &core, args.addr, UdpSocket::bind_reuseport, |s| {
            s.local_addr().ok()
        });
        let mut config = ServerConfig::new(protocol_id, key.clone());
        config.max_clients = max_clients;
        config.resumption = resumption;
        config.cookies = cookies;
        let shards = shards.clone();
        async move {
            let Some(socket) = socket else {
                return;
            };
            // Tokens must name the address clients send to.
            if let Ok(local) = socket.local_addr()
                && !local.ip().is_unspecified()
            {
                config.public_addresses = vec![local];
            }
            let now = coring::time::now();
            let unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            let echo = |sessions: &mut udp::Sessions<'_>, event: Event<'_>| {
                if let Event::Payload { client, data } = event
                    && let Err(e) = sessions.send(client, data)
                {
                    tracing::debug!(error = %e, "echo not sent");
                }
            };
            let stats = match shards {
                Some(shards) => {
                    config.index_base = udp::Shards::index_base(config.max_clients);
                    let server = Server::new(config, now, unix);
                    udp::serve_sharded(socket, server, None, shards, echo).await
                }
                None => udp::serve(socket, Server::new(config, now, unix), echo).await,
            };
            tracing::info!(
                received = stats.received,
                sent = stats.sent,
                connected = stats.connected,
                dropped = stats.drops.total(),
                "netcode_echo core done"
            );
        }
    });
    startup.exit(NAME, result);
}
