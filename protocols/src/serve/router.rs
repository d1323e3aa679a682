//! A small router: method + path, with `:name` segments captured as parameters.

use std::future::Future;
use std::pin::Pin;

use crate::http1::{Request, Response};
use crate::serve::Reply;

/// Path parameters captured by a route (`/users/:id` → `id`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The value captured for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type BoxedFuture = Pin<Box<dyn Future<Output = Reply>>>;
type Route = Box<dyn Fn(Request, Params) -> BoxedFuture>;

/// Routes requests to handlers by method and path; unknown paths get 404, known paths with
/// another method get 405.
#[derive(Default)]
pub struct Router {
    routes: Vec<(String, Vec<Segment>, Route)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(m, s, _)| (m, s.len())))
            .finish()
    }
}

enum Segment {
    Literal(String),
    Param(String),
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a route. `pattern` segments starting with `:` capture that segment.
    pub fn route<F, Fut, R>(mut self, method: &str, pattern: &str, handler: F) -> Self
    where
        F: Fn(Request, Params) -> Fut + 'static,
        Fut: Future<Output = R> + 'static,
        R: Into<Reply>,
    {
        let segments = split(pattern)
            .map(|s| match s.strip_prefix(':') {
                Some(name) => Segment::Param(name.to_string()),
                None => Segment::Literal(s.to_string()),
            })
            .collect();
        let route: Route = Box::new(move |req, params| {
            let fut = handler(req, params);
            Box::pin(async move { fut.await.into() })
        });
        self.routes
            .push((method.to_ascii_uppercase(), segments, route));
        self
    }

    fn find(&self, method: &str, path: &str) -> Result<(&Route, Params), u16> {
        let mut status = 404;
        for (m, segments, route) in &self.routes {
            let Some(params) = matches(segments, path) else {
                continue;
            };
            if m == method || (method == "HEAD" && m == "GET") {
                return Ok((route, params));
            }
            status = 405;
        }
        Err(status)
    }
}

impl crate::serve::Handler for Router {
    type Output = Reply;

    async fn call(&self, req: Request) -> Reply {
        let found = self.find(req.method(), req.path());
        match found {
            Ok((route, params)) => route(req, params).await,
            Err(status) => Response::new(status).into(),
        }
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn matches(segments: &[Segment], path: &str) -> Option<Params> {
    let mut params = Params::default();
    let mut parts = split(path);
    for seg in segments {
        let part = parts.next()?;
        match seg {
            Segment::Literal(l) if l == part => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => params.pairs.push((name.clone(), part.to_string())),
        }
    }
    parts.next().is_none().then_some(params)
}
