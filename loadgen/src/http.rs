//! The `http` workload: HTTP/1.1 requests over keep-alive connections, pipelined or not;
//! `https://` (feature `tls`) runs them over TLS.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use coring_protocols::client::Url;
use coring_protocols::http1::{Limits, ResponseFramer, encode_request};

use crate::link::TlsDial;
use crate::run::{Lane, Workload};
use crate::stream::{Exchange, Reply, Verdict, Wrong, drive};

/// What to send and what to expect back.
#[derive(Clone, Debug)]
pub struct HttpSpec {
    /// `http://host:port/path?query`, or `https://` (feature `tls`).
    pub url: String,
    /// For `https://`: the client configuration (roots, resumption); the web's public roots
    /// when `None`.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<coring_protocols::tls::rustls::ClientConfig>>,
    /// Request method.
    pub method: String,
    /// Extra request headers (`Host` and `Content-Length` are written for you).
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Expected status; `None` accepts any 2xx or 3xx.
    pub expect_status: Option<u16>,
    /// Expected body length in bytes, when known.
    pub expect_body_bytes: Option<u64>,
    /// Largest response body accepted.
    pub max_body_bytes: u64,
}

impl Default for HttpSpec {
    fn default() -> Self {
        HttpSpec {
            url: String::new(),
            method: "GET".into(),
            headers: Vec::new(),
            body: Vec::new(),
            expect_status: None,
            expect_body_bytes: None,
            max_body_bytes: 64 * 1024 * 1024,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// The `http` workload, ready to run.
#[derive(Debug)]
pub struct Http {
    spec: HttpSpec,
    addr: SocketAddr,
    /// One request's bytes.
    request_len: usize,
    /// `pipeline` copies of the request back to back: a write of k requests is a slice of it.
    requests: Bytes,
    head: bool,
    tls: Option<TlsDial>,
}

impl Http {
    /// Resolves the URL and renders the request, `pipeline` copies of it.
    pub fn new(spec: HttpSpec, pipeline: usize) -> Result<Http, String> {
        let url = Url::parse(&spec.url)?;
        let addr = crate::run::resolve((url.host.as_str(), url.port), &url.host)?;
        let method = spec.method.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("{:?} is not an HTTP method", spec.method));
        }
        let mut headers = Vec::with_capacity(spec.headers.len());
        for (name, value) in &spec.headers {
            let reserved = ["host", "content-length", "transfer-encoding"];
            if reserved.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                return Err(format!("header {name} is written by the load generator"));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(format!("header {name}: value contains a line break"));
            }
            headers.push((name.clone(), value.as_bytes().to_vec()));
        }
        let mut one = Vec::new();
        encode_request(
            &method,
            &url.target,
            &url.authority(),
            &headers,
            &spec.body,
            &mut one,
        );
        let request_len = one.len();
        let requests = Bytes::from(one.repeat(pipeline.max(1)));
        let tls = match url.tls {
            false => None,
            #[cfg(feature = "tls")]
            true => {
                let config = spec
                    .tls
                    .clone()
                    .unwrap_or_else(coring_protocols::tls::default_client_config);
                Some(TlsDial::new(config, &url.host)?)
            }
            #[cfg(not(feature = "tls"))]
            true => return Err(format!("{}: https needs the tls feature", spec.url)),
        };
        Ok(Http {
            tls,
            head: method == "HEAD",
            spec,
            addr,
            request_len,
            requests,
        })
    }

    /// The address connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Workload for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn target(&self) -> String {
        self.spec.url.clone()
    }

    fn connection(self: Arc<Self>, lane: Lane) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            let addr = self.addr;
            drive(lane, addr, self.tls.as_ref(), || {
                HttpExchange::new(Arc::clone(&self))
            })
            .await
        })
    }
}

/// One connection's framing state.
struct HttpExchange {
    http: Arc<Http>,
    framer: ResponseFramer,
    /// An incomplete response head carried over to the next read.
    carry: Vec<u8>,
}

impl HttpExchange {
    fn new(http: Arc<Http>) -> HttpExchange {
        let limits = Limits {
            max_body_bytes: http.spec.max_body_bytes,
            ..Limits::default()
        };
        HttpExchange {
            framer: ResponseFramer::new(limits),
            http,
            carry: Vec::new(),
        }
    }

    fn judge(&self, status: u16, body_bytes: u64) -> Verdict {
        let spec = &self.http.spec;
        let status_ok = match spec.expect_status {
            Some(want) => status == want,
            None => (200..400).contains(&status),
        };
        if !status_ok {
            Verdict::Wrong(Wrong::Status(status))
        } else if spec
            .expect_body_bytes
            .is_some_and(|want| want != body_bytes && !self.http.head)
        {
            Verdict::Wrong(Wrong::BodyLength)
        } else {
            Verdict::Ok
        }
    }

    /// Frames responses from the front of `input`; returns the bytes consumed.
    fn frame(&mut self, input: &[u8], reply: &mut dyn FnMut(Reply)) -> Result<usize, &'static str> {
        let mut used = 0;
        while used < input.len() {
            let (n, framed) = self
                .framer
                .advance(&input[used..], self.http.head)
                .map_err(|_| "bad_response")?;
            used += n;
            match framed {
                Some(r) => {
                    let verdict = self.judge(r.status, r.body_bytes);
                    reply(Reply {
                        verdict,
                        close: !r.keep_alive,
                    });
                    if !r.keep_alive {
                        // Whatever follows a closing response is not ours to read.
                        return Ok(input.len());
                    }
                }
                None if n == 0 => break,
                None => {}
            }
        }
        Ok(used)
    }
}

impl Exchange for HttpExchange {
    fn requests(&mut self, k: usize) -> Bytes {
        self.http.requests.slice(..k * self.http.request_len)
    }

    fn receive(&mut self, input: &[u8], reply: &mut dyn FnMut(Reply)) -> Result<(), &'static str> {
        if self.carry.is_empty() {
            let used = self.frame(input, reply)?;
            self.carry.extend_from_slice(&input[used..]);
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(input);
            let used = self.frame(&carry, reply)?;
            carry.drain(..used);
            self.carry = carry;
        }
        Ok(())
    }

    fn closed(&mut self, reply: &mut dyn FnMut(Reply)) -> Result<(), &'static str> {
        if !self.carry.is_empty() {
            return Err("bad_response");
        }
        match self.framer.finish() {
            Ok(Some(r)) => {
                let verdict = self.judge(r.status, r.body_bytes);
                reply(Reply {
                    verdict,
                    close: true,
                });
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(_) => Err("bad_response"),
        }
    }
}
