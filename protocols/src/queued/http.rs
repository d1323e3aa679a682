//! A [`QueuedEndpoint`] behind HTTP: the answer a submission gets, and the operator's routes.
//!
//! [`submitted`] turns [`QueuedEndpoint::submit`]'s result into `202 Accepted` with
//! `{"id":N}`, or `503 Service Unavailable` with `Retry-After: 1` and `{"error":"..."}`
//! (paused, full, shutting down). [`routes`] adds, under a prefix:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /stats` | sizes and counts (JSON) |
//! | `POST /pause`, `/resume` | both |
//! | `POST /pause-accepting`, `/resume-accepting`, `/pause-processing`, `/resume-processing` | one |
//! | `GET /errors` | the error queue: id, error, attempts |
//! | `GET /errors/:id` | one entry, its request shown with `Debug` |
//! | `DELETE /errors/:id` | pops it (the entry is the answer) |
//! | `DELETE /errors` | clears the queue: `{"cleared":N}` |
//! | `POST /errors/:id/retry` | sends it back through the handler |
//! | `POST /errors/retry` | sends all back: `{"retried":N}` |

use std::fmt::{Debug, Write};

use super::{Failed, QueueStats, QueuedEndpoint, Refusal, RetryError};
use crate::http1::Response;
use crate::serve::Router;

/// `s` as a JSON string.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json(status: u16, body: String) -> Response {
    Response::new(status)
        .header("Content-Type", "application/json")
        .body(body)
}

/// The answer to a submission.
pub fn submitted<T>(result: Result<u64, (Refusal, T)>) -> Response {
    match result {
        Ok(id) => json(202, format!("{{\"id\":{id}}}")),
        Err((refusal, _)) => json(
            503,
            format!("{{\"error\":{}}}", json_string(&refusal.to_string())),
        )
        .header("Retry-After", "1"),
    }
}

fn stats_json(s: &QueueStats) -> String {
    format!(
        "{{\"queued\":{},\"in_flight\":{},\"errors\":{},\"accepting\":{},\"processing\":{},\
         \"accepted\":{},\"refused_paused\":{},\"refused_full\":{},\"processed\":{},\
         \"failed\":{},\"retried\":{}}}",
        s.queued,
        s.in_flight,
        s.errors,
        s.accepting,
        s.processing,
        s.accepted,
        s.refused_paused,
        s.refused_full,
        s.processed,
        s.failed,
        s.retried
    )
}

fn entry_json<T: Debug>(f: &Failed<T>, with_item: bool) -> String {
    let mut out = format!(
        "{{\"id\":{},\"error\":{},\"attempts\":{}",
        f.job.id,
        json_string(&f.error),
        f.job.attempts
    );
    if with_item {
        let _ = write!(
            out,
            ",\"request\":{}",
            json_string(&format!("{:?}", f.job.item))
        );
    }
    out.push('}');
    out
}

fn id_of(params: &crate::serve::Params) -> Option<u64> {
    params.get("id").and_then(|id| id.parse().ok())
}

fn not_found() -> Response {
    json(404, "{\"error\":\"no error entry with that id\"}".into())
}

/// Adds the operator's routes for `endpoint` under `prefix` (such as `/admin/orders`).
pub fn routes<T: Clone + Debug + 'static>(
    router: Router,
    prefix: &str,
    endpoint: &QueuedEndpoint<T>,
) -> Router {
    let path = |rest: &str| format!("{prefix}{rest}");
    type Toggle<T> = fn(&QueuedEndpoint<T>);
    let toggles: [(&str, Toggle<T>); 6] = [
        ("/pause", |e| e.pause()),
        ("/resume", |e| e.resume()),
        ("/pause-accepting", |e| e.set_accepting(false)),
        ("/resume-accepting", |e| e.set_accepting(true)),
        ("/pause-processing", |e| e.set_processing(false)),
        ("/resume-processing", |e| e.set_processing(true)),
    ];
    let mut router = router;
    for (rest, toggle) in toggles {
        let e = endpoint.clone();
        router = router.route("POST", &path(rest), move |_r, _p| {
            toggle(&e);
            let stats = e.stats();
            async move { json(200, stats_json(&stats)) }
        });
    }
    let e = endpoint.clone();
    router = router.route("GET", &path("/stats"), move |_r, _p| {
        let stats = e.stats();
        async move { json(200, stats_json(&stats)) }
    });
    let e = endpoint.clone();
    router = router.route("GET", &path("/errors"), move |_r, _p| {
        let list: Vec<String> = e.errors().iter().map(|f| entry_json(f, false)).collect();
        async move { json(200, format!("[{}]", list.join(","))) }
    });
    let e = endpoint.clone();
    router = router.route("GET", &path("/errors/:id"), move |_r, p| {
        let found = id_of(&p).and_then(|id| e.error(id));
        async move {
            match found {
                Some(f) => json(200, entry_json(&f, true)),
                None => not_found(),
            }
        }
    });
    let e = endpoint.clone();
    router = router.route("DELETE", &path("/errors/:id"), move |_r, p| {
        let popped = id_of(&p).and_then(|id| e.pop_error(id));
        async move {
            match popped {
                Some(f) => json(200, entry_json(&f, true)),
                None => not_found(),
            }
        }
    });
    let e = endpoint.clone();
    router = router.route("DELETE", &path("/errors"), move |_r, _p| {
        let n = e.clear_errors();
        async move { json(200, format!("{{\"cleared\":{n}}}")) }
    });
    let e = endpoint.clone();
    router = router.route("POST", &path("/errors/retry"), move |_r, _p| {
        let n = e.retry_all();
        async move { json(200, format!("{{\"retried\":{n}}}")) }
    });
    let e = endpoint.clone();
    router.route("POST", &path("/errors/:id/retry"), move |_r, p| {
        let outcome = id_of(&p).map(|id| e.retry(id));
        async move {
            match outcome {
                Some(Ok(())) => json(200, "{\"retried\":1}".into()),
                Some(Err(RetryError::Full)) => {
                    json(503, "{\"error\":\"the queue is full\"}".into()).header("Retry-After", "1")
                }
                _ => not_found(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn strings_are_escaped_for_json() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
