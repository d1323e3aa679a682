//! The `game_server` example as its users meet it: headless Chromium runs the browser client
//! (joins over WebSocket, moves, drops its connection, resumes as the same player, reports),
//! renetcode's client joins over netcode UDP with a token from `/token`, and a tungstenite
//! client checks that snapshots come every tick, in order.

use std::net::UdpSocket;
#[cfg(target_os = "linux")]
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use coring_tests::Example;
use tungstenite::Message as TMessage;

/// The example on two cores.
fn game() -> Example {
    Example::start("game_server", ["--cores", "2"])
}

/// Lines the example prints after its ready line, as they come.
#[cfg(target_os = "linux")]
fn lines(game: &mut Example) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let out = game.take_stdout();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// `key=value` pairs of a report line.
#[cfg(target_os = "linux")]
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(target_os = "linux")]
#[test]
fn chromium_plays_drops_and_resumes_as_the_same_player() {
    let mut game = game();
    let lines = lines(&mut game);
    let profile = std::env::temp_dir().join(format!("coring-chromium-{}", std::process::id()));
    let mut browser = Command::new("timeout")
        .args([
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{}/?bot=1", game.addr()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (the Debian package; .ci/run installs it)");
    let report = lines
        .recv_timeout(Duration::from_secs(45))
        .expect("the browser client never reported");
    let _ = browser.kill();
    let _ = browser.wait();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(report.starts_with("report "), "{report}");
    assert_eq!(field(&report, "resumed"), Some("1"), "{report}");
    assert_eq!(
        field(&report, "kept"),
        Some("1"),
        "resumed as the same player: {report}"
    );
    let ticks: u64 = field(&report, "ticks").unwrap().parse().unwrap();
    assert!(ticks >= 60, "{report}");
    // It moved right and down from the middle (500, 500), two units a tick, across its resume.
    let x: f64 = field(&report, "x").unwrap().parse().unwrap();
    let y: f64 = field(&report, "y").unwrap().parse().unwrap();
    assert!(x > 560.0 && y > 560.0, "moved: {report}");
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
}

/// `(tick, players)` of a snapshot.
fn snapshot(bytes: &[u8]) -> (u64, Vec<Vec<f64>>) {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let tick = v["tick"].as_u64().unwrap();
    let players = v["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_f64().unwrap())
                .collect()
        })
        .collect();
    (tick, players)
}

#[test]
fn a_renetcode_client_joins_over_udp_with_a_token_and_moves() {
    let game = game();
    let response = ureq::get(format!("http://{}/token", game.addr()))
        .call()
        .unwrap();
    let id: u64 = response
        .headers()
        .get("X-Client-Id")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.into_body().read_to_vec().unwrap();
    assert_eq!(body.len(), 2048);
    // renetcode reads the client id, then the standard's bytes.
    let mut bytes = id.to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let token = renetcode::ConnectToken::read(&mut bytes.as_slice()).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let mut client = renetcode::NetcodeClient::new(
        unix_now(),
        renetcode::ClientAuthentication::Secure {
            connect_token: token,
        },
    )
    .unwrap();
    let mut last = Instant::now();
    let mut snapshots = Vec::new();
    let mut sent_input = false;
    let end = Instant::now() + Duration::from_secs(20);
    while snapshots.len() < 90 {
        assert!(
            Instant::now() < end,
            "{} snapshots; {:?}",
            snapshots.len(),
            client.disconnect_reason()
        );
        let now = Instant::now();
        if let Some((packet, to)) = client.update(now - last) {
            socket.send_to(packet, to).unwrap();
        }
        last = now;
        if client.is_connected() && !sent_input {
            let (to, packet) = client.generate_payload_packet(b"input 1 0").unwrap();
            socket.send_to(packet, to).unwrap();
            sent_input = true;
        }
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Some(p) = client.process_packet(&mut buf[..n]) {
                snapshots.push(snapshot(p));
            }
        }
    }
    let (first_tick, _) = snapshots[0];
    let (last_tick, players) = snapshots.last().unwrap().clone();
    assert!(last_tick > first_tick, "ticks advance");
    assert!(
        snapshots.windows(2).all(|w| w[0].0 < w[1].0),
        "snapshots in tick order"
    );
    let me = players
        .iter()
        .find(|p| p[0] as u64 == id)
        .expect("our player");
    assert!(me[1] > 560.0 && me[2] == 500.0, "moved right: {me:?}");
}

#[test]
fn a_websocket_client_gets_a_snapshot_every_tick() {
    let game = game();
    let (mut socket, _) = tungstenite::connect(format!("ws://{}/play", game.addr())).unwrap();
    let welcome = socket.read().unwrap();
    let welcome = welcome.to_text().unwrap().to_owned();
    let id: u64 = welcome.split(' ').nth(1).unwrap().parse().unwrap();
    socket.send(TMessage::text("input 0 1")).unwrap();
    let start = Instant::now();
    let mut ticks = Vec::new();
    let mut moved = None;
    while start.elapsed() < Duration::from_secs(2) {
        let m = socket.read().unwrap();
        let (tick, players) = snapshot(m.to_text().unwrap().as_bytes());
        ticks.push(tick);
        if let Some(me) = players.iter().find(|p| p[0] as u64 == id) {
            moved = Some(me[2]);
        }
    }
    // 60 Hz for two seconds: about 120 ticks, in order. Snapshots are conflated: when the
    // world's core runs late and two ticks go out in one turn, a member gets the newer only.
    let span = ticks.last().unwrap() - ticks[0] + 1;
    assert!((100..=140).contains(&span), "{span} ticks in 2 s");
    assert!(
        ticks.len() as u64 * 4 >= span * 3,
        "{} snapshots of {span} ticks",
        ticks.len()
    );
    assert!(ticks.windows(2).all(|w| w[1] > w[0]), "in tick order");
    assert!(moved.unwrap() > 600.0, "moved down: {moved:?}");
    // Garbage is not an input, and the connection carries on.
    socket
        .send(TMessage::text("input lots of nonsense"))
        .unwrap();
    socket.send(TMessage::binary(vec![0xff; 64])).unwrap();
    assert!(socket.read().unwrap().is_text());
}
