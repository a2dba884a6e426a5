//! The HTTP client of the transfers: ureq (the client hf-hub itself is built on) with the
//! timeouts a download needs (connecting, and no byte for `stall` seconds while reading), no
//! compression (byte ranges must mean file bytes), redirects followed here so that the token goes
//! only to the exact origin of the hub endpoint (never to a redirect's CDN or another port, never
//! to a plain URL weight), and every error sorted into "retry" or "stop".
use super::origin::{self, Origin};
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
    /// Follows no redirect itself: [`Http::call`] does, deciding the token per hop.
    agent: ureq::Agent,
    /// The origin of the hub endpoint: the only place the token goes.
    hub: Option<Origin>,
    token: Option<Token>,
    pub stall: Duration,
    /// The whole of a small request (metadata): connecting, then a stall's worth.
    small: Duration,
}

/// Whether a request may carry the hub token (to the hub's own origin only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// A request of the hub's protocol.
    Hub,
    /// A plain URL weight: never a token, whatever its host.
    Never,
}

/// Which redirects a request follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Any (downloads: the hub sends large files to a CDN).
    All,
    /// Only a path on the same server (metadata: the headers of the hub's own answer count).
    Relative,
}

const MAX_REDIRECTS: usize = 10;

/// `host[:port]` of a URL.
pub(crate) fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

impl Http {
    pub fn new(s: &Settings) -> Http {
        let p: &Policy = &s.policy;
        let agent = ureq::AgentBuilder::new()
            .try_proxy_from_env(true)
            .timeout_connect(p.connect)
            .timeout_read(p.stall)
            .timeout_write(p.stall)
            .redirects(0)
            .redirect_auth_headers(ureq::RedirectAuthHeaders::Never)
            .user_agent(USER_AGENT)
            .build();
        Http {
            agent,
            hub: Origin::of(&s.endpoint),
            token: s.token.clone(),
            stall: s.policy.stall,
            small: p.connect + p.stall,
        }
    }

    fn request(&self, method: &str, url: &str, auth: Auth) -> ureq::Request {
        let mut r = self
            .agent
            .request(method, url)
            .set("Accept-Encoding", "identity");
        if let (Auth::Hub, Some(t), Some(hub)) = (auth, &self.token, &self.hub) {
            if Origin::of(url).as_ref() == Some(hub) {
                r = r.set("Authorization", &t.header());
            }
        }
        r
    }

    /// `method url`, following redirects as `follow` says; each hop gets the token only when
    /// it goes to the hub's own origin.
    fn call(
        &self,
        method: &str,
        url: &str,
        auth: Auth,
        follow: Follow,
        prepare: &dyn Fn(ureq::Request) -> ureq::Request,
    ) -> Result<ureq::Response, Failure> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let resp = prepare(self.request(method, &url, auth))
                .call()
                .map_err(classify)?;
            let loc = match resp.header("Location") {
                Some(loc) if (300..400).contains(&resp.status()) => loc.trim().to_string(),
                _ => return Ok(resp),
            };
            let same_server = loc.starts_with('/') && !loc.starts_with("//");
            if follow == Follow::Relative && !same_server {
                return Ok(resp);
            }
            url = origin::join(&url, &loc).ok_or_else(|| {
                Failure::final_(format!("{url} redirects to `{loc}`, which is not a URL"))
            })?;
        }
        Err(Failure::final_(format!(
            "more than {MAX_REDIRECTS} redirects, the last to {url}"
        )))
    }

    /// `GET url`, from byte `from` on (`Range: bytes=from-`) when `from > 0`.
    pub fn get(&self, url: &str, from: u64, auth: Auth) -> Result<ureq::Response, Failure> {
        let range = format!("bytes={from}-");
        self.call("GET", url, auth, Follow::All, &|r| {
            if from > 0 {
                r.set("Range", &range)
            } else {
                r
            }
        })
    }

    /// `GET url` of a small answer (the hub's file list), which must be over within the
    /// connect timeout plus the stall timeout (each redirect hop).
    pub fn get_small(&self, url: &str, auth: Auth) -> Result<ureq::Response, Failure> {
        self.call("GET", url, auth, Follow::All, &|r| r.timeout(self.small))
    }

    /// `HEAD url`, following only redirects within the same server (a renamed repo), as
    /// huggingface_hub does: the hub's own answer carries the commit, the ETag and the size.
    pub fn head(&self, url: &str, auth: Auth) -> Result<ureq::Response, Failure> {
        self.call("HEAD", url, auth, Follow::Relative, &|r| {
            r.timeout(self.small)
        })
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
