//! The NATS client protocol, sans-IO: what a server sends, parsed from any split, and what a
//! client sends, encoded into the caller's buffer.
//!
//! Only what a client that publishes and subscribes needs: `INFO`, `MSG`, `PING`, `PONG`,
//! `+OK` and `-ERR` in; `CONNECT`, `PUB`, `SUB`, `UNSUB`, `PING` and `PONG` out. Headers
//! (`HMSG`) are refused: a client that does not announce `headers` in `CONNECT` is never sent
//! them. Control lines are bounded, payloads are bounded by the caller (the server's
//! `max_payload`), and a parse borrows from the input.

use std::fmt::Write as _;

/// The longest control line taken (the server's default is 4,096).
pub const MAX_CONTROL_LINE: usize = 4096;

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// The server's description (JSON).
    Info(&'a str),
    /// A message on a subscription.
    Msg {
        /// Its subject.
        subject: &'a str,
        /// The subscription it matched.
        sid: u64,
        /// Where answers go, if the publisher asked for them.
        reply: Option<&'a str>,
        /// Its bytes.
        payload: &'a [u8],
    },
    /// The server checks we are alive: answer `PONG`.
    Ping,
    /// The answer to our `PING`.
    Pong,
    /// A verbose-mode acknowledgement.
    Ok,
    /// An error; the server usually closes the connection after it.
    Err(&'a str),
}

/// Input that is not the NATS protocol, or past a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsError {
    /// A control line longer than [`MAX_CONTROL_LINE`].
    #[error("control line longer than {MAX_CONTROL_LINE} bytes")]
    LineTooLong,
    /// A payload larger than the limit.
    #[error("payload of {0} bytes is over the limit")]
    PayloadTooLarge(usize),
    /// An operation this client does not know (or one it never asked for, such as `HMSG`).
    #[error("unknown operation {0:?}")]
    Unknown(String),
    /// An operation with missing or malformed arguments.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Whether `input` starts with a whole operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Status<'a> {
    /// The operation and the bytes it took.
    Complete(ServerOp<'a>, usize),
    /// More bytes are needed.
    Partial,
}

/// Parses the first operation in `input`; payloads larger than `max_payload` are refused
/// from their control line, before any is buffered.
pub fn parse(input: &[u8], max_payload: usize) -> Result<Status<'_>, NatsError> {
    let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
        if input.len() > MAX_CONTROL_LINE {
            return Err(NatsError::LineTooLong);
        }
        return Ok(Status::Partial);
    };
    if end > MAX_CONTROL_LINE {
        return Err(NatsError::LineTooLong);
    }
    let line =
        std::str::from_utf8(&input[..end]).map_err(|_| NatsError::Malformed("control line"))?;
    let after = end + 2;
    let (op, args) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    let op_upper = op.to_ascii_uppercase();
    let simple = |op| Ok(Status::Complete(op, after));
    match op_upper.as_str() {
        "PING" => simple(ServerOp::Ping),
        "PONG" => simple(ServerOp::Pong),
        "+OK" => simple(ServerOp::Ok),
        "-ERR" => simple(ServerOp::Err(args.trim().trim_matches('\''))),
        "INFO" => simple(ServerOp::Info(args.trim())),
        "MSG" => {
            let mut words = args.split_ascii_whitespace();
            let subject = words.next().ok_or(NatsError::Malformed("MSG"))?;
            let sid = words
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(NatsError::Malformed("MSG"))?;
            let (reply, len) = match (words.next(), words.next(), words.next()) {
                (Some(len), None, None) => (None, len),
                (Some(reply), Some(len), None) => (Some(reply), len),
                _ => return Err(NatsError::Malformed("MSG")),
            };
            let len: usize = len.parse().map_err(|_| NatsError::Malformed("MSG"))?;
            if len > max_payload {
                return Err(NatsError::PayloadTooLarge(len));
            }
            if input.len() < after + len + 2 {
                return Ok(Status::Partial);
            }
            if &input[after + len..after + len + 2] != b"\r\n" {
                return Err(NatsError::Malformed("MSG payload"));
            }
            Ok(Status::Complete(
                ServerOp::Msg {
                    subject,
                    sid,
                    reply,
                    payload: &input[after..after + len],
                },
                after + len + 2,
            ))
        }
        _ => Err(NatsError::Unknown(op.chars().take(16).collect())),
    }
}

/// `CONNECT` for a client named `name`; with `echo` false the server does not send the
/// client its own messages.
pub fn connect(out: &mut Vec<u8>, name: &str, echo: bool) {
    let mut line = String::new();
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    let _ = write!(
        line,
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"{name}\",\"lang\":\"rust\",\"version\":\"{}\",\"protocol\":1,\"echo\":{echo}}}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    out.extend_from_slice(line.as_bytes());
}

/// Whether `subject` is one a client may publish to (tokens between dots, no wildcards, no
/// white space).
pub fn valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|t| {
            !t.is_empty()
                && !t
                    .bytes()
                    .any(|b| b <= b' ' || b == b'*' || b == b'>' || b >= 0x7f)
        })
}

/// `PUB subject len`, then the payload.
pub fn publish(out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `SUB subject sid` (the subject may hold wildcards).
pub fn subscribe(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

/// `PING`.
pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

/// `PONG`.
pub fn pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// The `max_payload` an `INFO` announces, if it does.
pub fn max_payload(info: &str) -> Option<usize> {
    let at = info.find("\"max_payload\"")? + "\"max_payload\"".len();
    let rest = info[at..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_splits(input: &[u8]) {
        let whole = parse(input, 1 << 20).unwrap();
        let Status::Complete(_, n) = whole else {
            panic!("whole input is partial")
        };
        assert_eq!(n, input.len());
        for cut in 0..input.len() {
            assert_eq!(
                parse(&input[..cut], 1 << 20).unwrap(),
                Status::Partial,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn msg_with_and_without_reply_from_any_split() {
        let input = b"MSG rooms.lobby 1 5\r\nhello\r\n";
        all_splits(input);
        assert_eq!(
            parse(input, 100).unwrap(),
            Status::Complete(
                ServerOp::Msg {
                    subject: "rooms.lobby",
                    sid: 1,
                    reply: None,
                    payload: b"hello"
                },
                input.len()
            )
        );
        let input = b"MSG a.b 7 inbox.1 0\r\n\r\n";
        all_splits(input);
        match parse(input, 100).unwrap() {
            Status::Complete(ServerOp::Msg { reply, payload, .. }, _) => {
                assert_eq!((reply, payload), (Some("inbox.1"), &b""[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_ops_and_info() {
        assert_eq!(
            parse(b"PING\r\n", 1).unwrap(),
            Status::Complete(ServerOp::Ping, 6)
        );
        assert_eq!(
            parse(b"-ERR 'Authorization Violation'\r\n", 1).unwrap(),
            Status::Complete(ServerOp::Err("Authorization Violation"), 32)
        );
        let info = r#"INFO {"server_id":"x","max_payload":1048576,"proto":1}"#;
        let line = format!("{info}\r\n");
        match parse(line.as_bytes(), 1).unwrap() {
            Status::Complete(ServerOp::Info(json), _) => {
                assert_eq!(max_payload(json), Some(1_048_576));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_input_is_refused() {
        assert_eq!(
            parse(b"MSG a 1 999999\r\n", 1000),
            Err(NatsError::PayloadTooLarge(999_999))
        );
        assert_eq!(
            parse(&[b'x'; MAX_CONTROL_LINE + 1], 10),
            Err(NatsError::LineTooLong)
        );
        assert!(matches!(
            parse(b"HMSG a 1 2 2\r\n", 10),
            Err(NatsError::Unknown(_))
        ));
        assert_eq!(
            parse(b"MSG a x 1\r\n", 10),
            Err(NatsError::Malformed("MSG"))
        );
        assert_eq!(
            parse(b"MSG a 1 2\r\nabXY", 10),
            Err(NatsError::Malformed("MSG payload"))
        );
    }

    #[test]
    fn client_ops_encode() {
        let mut out = Vec::new();
        publish(&mut out, "rooms.lobby", b"hi");
        subscribe(&mut out, "rooms.>", 1);
        ping(&mut out);
        assert_eq!(out, b"PUB rooms.lobby 2\r\nhi\r\nSUB rooms.> 1\r\nPING\r\n");
        let mut out = Vec::new();
        connect(&mut out, "chat \"x\"", false);
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("CONNECT {") && line.ends_with("}\r\n"));
        assert!(line.contains("\"name\":\"chatx\"") && line.contains("\"echo\":false"));
        assert!(
            valid_subject("rooms.lobby") && !valid_subject("rooms.*") && !valid_subject("a..b")
        );
    }
}
