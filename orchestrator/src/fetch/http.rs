//! The HTTP client of the transfers: ureq (the client hf-hub itself is built on) with the
//! timeouts a download needs (connecting, and no byte for `stall` seconds while reading), no
//! compression (byte ranges must mean file bytes), the token sent only to the hub's own host
//! (never to a redirect's CDN or a plain URL), and every error sorted into "retry" or "stop".
use super::settings::{Policy, Settings, Token};
use std::time::Duration;

const USER_AGENT: &str = concat!("fidshard/", env!("CARGO_PKG_VERSION"), "; hf-hub/0.4");

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A connection error, a timeout, a stall, a broken or short body, 5xx, 408, 429.
    Temporary,
    /// Another HTTP error (401, 403, 404, ...): the caller says what to do about it.
    Refused(u16),
    /// An answer that will not change by asking again.
    Final,
}

/// One failed attempt.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub kind: Kind,
    pub message: String,
    /// The server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// Bytes arrived before it failed: the next attempt resumes further on, so it starts the
    /// count of failures in a row afresh.
    pub progressed: bool,
    /// The hub's `X-Error-Code` (`GatedRepo`, `RepoNotFound`, `EntryNotFound`, ...).
    pub hub_code: Option<String>,
}

impl Failure {
    pub fn temporary(message: impl Into<String>) -> Failure {
        Failure {
            kind: Kind::Temporary,
            message: message.into(),
            retry_after: None,
            progressed: false,
            hub_code: None,
        }
    }

    pub fn final_(message: impl Into<String>) -> Failure {
        Failure {
            kind: Kind::Final,
            ..Failure::temporary(message)
        }
    }

    /// A read or write of the body that failed.
    pub fn body(e: &std::io::Error, stall: Duration, progressed: bool) -> Failure {
        use std::io::ErrorKind as K;
        let message = match e.kind() {
            K::TimedOut | K::WouldBlock => format!(
                "stalled: no data for {:.1} s (FIDSHARD_FETCH_STALL)",
                stall.as_secs_f64()
            ),
            K::UnexpectedEof => "the connection closed before the end of the body".to_string(),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                "the connection was reset during the body".to_string()
            }
            _ => format!("reading the body: {e}"),
        };
        Failure {
            progressed,
            ..Failure::temporary(message)
        }
    }
}

pub(crate) struct Http {
    /// Follows redirects (downloads: the hub sends large files to a CDN).
    agent: ureq::Agent,
    /// Follows none (metadata: the headers of the hub's own answer count).
    head_agent: ureq::Agent,
    /// `host:port` of the hub endpoint: the only place the token goes.
    hub_host: Option<String>,
    token: Option<Token>,
    pub stall: Duration,
}

/// `host[:port]` of a URL.
pub(crate) fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

impl Http {
    pub fn new(s: &Settings) -> Http {
        let build = |redirects: u32, p: &Policy| {
            ureq::AgentBuilder::new()
                .try_proxy_from_env(true)
                .timeout_connect(p.connect)
                .timeout_read(p.stall)
                .timeout_write(p.stall)
                .redirects(redirects)
                .redirect_auth_headers(ureq::RedirectAuthHeaders::SameHost)
                .user_agent(USER_AGENT)
                .build()
        };
        Http {
            agent: build(10, &s.policy),
            head_agent: build(0, &s.policy),
            hub_host: host_of(&s.endpoint),
            token: s.token.clone(),
            stall: s.policy.stall,
        }
    }

    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let mut r = agent
            .request(method, url)
            .set("Accept-Encoding", "identity");
        if let Some(t) = &self.token {
            if self.hub_host.is_some() && host_of(url) == self.hub_host {
                r = r.set("Authorization", &t.header());
            }
        }
        r
    }

    /// `GET url`, from byte `from` on (`Range: bytes=from-`) when `from > 0`.
    pub fn get(&self, url: &str, from: u64) -> Result<ureq::Response, Failure> {
        let mut r = self.request(&self.agent, "GET", url);
        if from > 0 {
            r = r.set("Range", &format!("bytes={from}-"));
        }
        r.call().map_err(classify)
    }

    /// `HEAD url`, following only redirects within the same host (a renamed repo), as
    /// huggingface_hub does: the hub's own answer carries the commit, the ETag and the size.
    pub fn head(&self, url: &str) -> Result<ureq::Response, Failure> {
        let mut url = url.to_string();
        for _ in 0..5 {
            let resp = self
                .request(&self.head_agent, "HEAD", &url)
                .call()
                .map_err(classify)?;
            match resp.header("Location") {
                Some(loc) if (300..400).contains(&resp.status()) && loc.starts_with('/') => {
                    let origin_end = url
                        .find("://")
                        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
                        .unwrap_or(url.len());
                    url = format!("{}{loc}", &url[..origin_end]);
                }
                _ => return Ok(resp),
            }
        }
        Err(Failure::final_("too many redirects"))
    }
}

/// Sorts a ureq error: which status, whether to retry, the server's `Retry-After`.
pub(crate) fn classify(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Status(code, resp) => {
            let hub_code = resp.header("X-Error-Code").map(str::to_string);
            let detail = resp
                .header("X-Error-Message")
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            let retry_after = resp.header("Retry-After").and_then(retry_after);
            let kind = if code >= 500 || code == 429 || code == 408 {
                Kind::Temporary
            } else {
                Kind::Refused(code)
            };
            Failure {
                kind,
                message: format!("HTTP {code} {}{detail}", resp.status_text()),
                retry_after,
                progressed: false,
                hub_code,
            }
        }
        ureq::Error::Transport(t) => {
            use ureq::ErrorKind as K;
            let mut message = t.kind().to_string();
            if let Some(m) = t.message() {
                message += &format!(": {m}");
            }
            if let Some(src) = std::error::Error::source(&t) {
                message += &format!(": {src}");
            }
            match t.kind() {
                K::InvalidUrl
                | K::UnknownScheme
                | K::InsecureRequestHttpsOnly
                | K::InvalidProxyUrl => Failure::final_(message),
                _ => Failure::temporary(message),
            }
        }
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub(crate) fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_retry_after() {
        assert_eq!(
            host_of("https://huggingface.co/a/b").as_deref(),
            Some("huggingface.co")
        );
        assert_eq!(
            host_of("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(host_of("http://u:p@Host:1/x?y").as_deref(), Some("host:1"));
        assert_eq!(host_of("nothing"), None);
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn body_errors_are_temporary() {
        let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "t");
        let f = Failure::body(&e, Duration::from_millis(1500), true);
        assert_eq!(f.kind, Kind::Temporary);
        assert!(f.message.contains("no data for 1.5 s") && f.progressed);
    }
}
