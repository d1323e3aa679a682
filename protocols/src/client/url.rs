//! The `http://` and `https://` URLs the client understands (`ws://` and `wss://` for
//! WebSockets).

/// A parsed `http[s]://host[:port]/target` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Whether the scheme is `https` (or `wss`): the connection runs TLS.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80, or 443 over TLS, when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    /// Parses an absolute `http://` or `https://` URL.
    pub fn parse(s: &str) -> Result<Url, String> {
        Url::parse_scheme(s, ["http://", "https://"])
    }

    /// Parses an absolute `ws://` or `wss://` URL (the same parts, for a WebSocket).
    pub fn parse_ws(s: &str) -> Result<Url, String> {
        Url::parse_scheme(s, ["ws://", "wss://"])
    }

    fn parse_scheme(s: &str, [plain, secure]: [&str; 2]) -> Result<Url, String> {
        let (tls, rest) = match (s.strip_prefix(plain), s.strip_prefix(secure)) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => return Err(format!("{s}: only {plain} and {secure} are supported")),
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let target = if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_string()
        };
        let target = target.split('#').next().unwrap_or("/").to_string();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s}: bad IPv6 host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{s}: bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{s}: bad authority")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{s}: bad port"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(format!("{s}: bad host"));
        }
        Ok(Url {
            tls,
            host,
            port,
            target,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// What the client pools connections by: scheme, host and port.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority())
    }

    /// `host:port` as sent in `Host` (brackets around IPv6).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves a `Location` value against this URL.
    pub fn join(&self, location: &str) -> Result<String, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Ok(location.to_string());
        }
        if location.contains("://") {
            return Err(format!(
                "{location}: only http:// and https:// are supported"
            ));
        }
        if location.starts_with('/') {
            return Ok(format!("{}{location}", self.origin()));
        }
        let base = self.target.split('?').next().unwrap_or("/");
        let dir = &base[..=base.rfind('/').unwrap_or(0)];
        Ok(format!("{}{dir}{location}", self.origin()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_targets() {
        let u = Url::parse("http://example.com:8080/a/b?q=1#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("example.com", 8080, "/a/b?q=1")
        );
        let u = Url::parse("http://[::1]/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority()),
            ("::1", 80, "[::1]:80".to_string())
        );
        assert_eq!(Url::parse("http://h?x").unwrap().target, "/?x");
        let u = Url::parse("https://h/").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 443);
        assert!(Url::parse("ftp://h/").is_err());
        assert!(Url::parse_ws("wss://h:9/x").unwrap().tls);
        assert!(Url::parse("http://h:port/").is_err());
    }

    #[test]
    fn joins_locations() {
        let u = Url::parse("http://h:1/a/b").unwrap();
        assert_eq!(u.join("/x").unwrap(), "http://h:1/x");
        assert_eq!(u.join("c").unwrap(), "http://h:1/a/c");
        assert_eq!(u.join("http://o:2/y").unwrap(), "http://o:2/y");
        let s = Url::parse("https://h:1/a/b").unwrap();
        assert_eq!(s.join("/x").unwrap(), "https://h:1/x");
    }
}
