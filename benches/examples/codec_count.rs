//! Scratch: instructions per request of the codec path alone (ServerConn + tfb_response)
//! against the raw loop's responder, for callgrind.
use std::rc::Rc;
use std::time::Instant;

use coring_protocols::http1::{ServerConfig, ServerConn};

const REQ: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\nConnection: keep-alive\r\n\r\n";
const DATE: &[u8] = b"Sun, 22 Nov 2026 00:00:00 GMT";

struct Buf(Vec<u8>);
impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_default();
    sizes();
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let mut input = Vec::new();
    for _ in 0..16 {
        input.extend_from_slice(REQ);
    }
    let mut out = Vec::with_capacity(64 * 1024);
    let now = Instant::now();
    let mut n = 0;
    if which == "raw" {
        for _ in 0..rounds {
            out.clear();
            let used = coring_benches::servers::respond(std::hint::black_box(&input), &mut out, None).unwrap();
            n += used;
        }
    } else {
        let mut conn = ServerConn::new(Rc::new(ServerConfig::default()), now);
        let shared: Rc<dyn AsRef<[u8]>> = Rc::new(Buf(input.clone()));
        for _ in 0..rounds {
            out.clear();
            conn.handle_shared(Rc::clone(&shared), now);
            while let Some(Ok(req)) = conn.poll_request() {
                let resp = coring_benches::tfb_response(req.path());
                conn.respond(&resp, now, DATE, &mut out);
                n += 1;
            }
        }
    }
    println!("{n} {}", out.len());
}
#[allow(dead_code)]
fn sizes() {
    eprintln!("Request {} Response {} Reply {} Opt<Res<Req>> {}", size_of::<coring_protocols::http1::Request>(), size_of::<coring_protocols::http1::Response>(), size_of::<coring_protocols::serve::Reply>(), size_of::<Option<Result<coring_protocols::http1::Request, coring_protocols::http1::Http1Error>>>());
}
