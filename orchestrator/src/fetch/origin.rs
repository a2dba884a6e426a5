//! Origins (scheme, host, port) and redirect targets. The hub token goes to one origin only,
//! the exact scheme, host and port of `HF_ENDPOINT` (a port of its own is another server), so
//! redirects are followed here, not by the HTTP client, and each hop decides afresh.

/// The scheme, host and port of a URL, the port made explicit (80 for http, 443 for https).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// `None` for what is not an http(s) URL with a host.
    pub fn of(url: &str) -> Option<Origin> {
        let (scheme, rest) = url.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = rest.split(['/', '?', '#']).next()?;
        let host_port = authority.rsplit('@').next()?;
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']')?;
                (format!("[{h}]"), port(after, default)?)
            }
            None => match host_port.split_once(':') {
                Some((h, p)) => (h.to_string(), port(&format!(":{p}"), default)?),
                None => (host_port.to_string(), default),
            },
        };
        (!host.is_empty() && host != "[]").then(|| Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// `""` or `":N"` after the host.
fn port(after: &str, default: u16) -> Option<u16> {
    match after.strip_prefix(':') {
        None if after.is_empty() => Some(default),
        Some("") => Some(default),
        Some(p) => p.parse().ok(),
        None => None,
    }
}

/// `scheme://authority` of `url`.
fn prefix(url: &str) -> Option<&str> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |j| start + j);
    Some(&url[..end])
}

/// Where a redirect's `Location` points, seen from `url`: absolute, scheme-relative (`//h/p`),
/// absolute-path (`/p`) or relative (`p`, beside the current path).
pub(crate) fn join(url: &str, location: &str) -> Option<String> {
    let loc = location.trim();
    if loc.is_empty() {
        return None;
    }
    if let Some((scheme, _)) = loc.split_once("://") {
        if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Some(loc.to_string());
        }
    }
    if let Some(rest) = loc.strip_prefix("//") {
        let scheme = url.split_once("://")?.0;
        return Some(format!("{scheme}://{rest}"));
    }
    let base = prefix(url)?;
    if loc.starts_with('/') {
        return Some(format!("{base}{loc}"));
    }
    let path = url[base.len()..].split(['?', '#']).next().unwrap_or("");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    Some(format!("{base}{dir}/{loc}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        let o = |u: &str| Origin::of(u);
        assert_eq!(
            o("https://huggingface.co/a"),
            o("HTTPS://HuggingFace.co:443")
        );
        assert_ne!(o("https://huggingface.co"), o("http://huggingface.co"));
        assert_ne!(o("http://127.0.0.1:8080/x"), o("http://127.0.0.1:8081/x"));
        assert_eq!(o("http://u:p@h:80/x"), o("http://h"));
        assert_eq!(o("http://[::1]:9/x"), o("http://[::1]:9"));
        assert_ne!(o("http://[::1]:9/x"), o("http://[::1]/x"));
        for bad in [
            "ftp://h/x",
            "nothing",
            "http://",
            "http://h:99999/",
            "http://h:x/",
        ] {
            assert_eq!(o(bad), None, "{bad}");
        }
    }

    #[test]
    fn redirect_targets() {
        let u = "http://a:1/org/repo/resolve/main/f.pt?x=1";
        assert_eq!(join(u, "https://cdn/x").unwrap(), "https://cdn/x");
        assert_eq!(join(u, "//cdn:2/x").unwrap(), "http://cdn:2/x");
        assert_eq!(join(u, "/api/x").unwrap(), "http://a:1/api/x");
        assert_eq!(
            join(u, "g.pt").unwrap(),
            "http://a:1/org/repo/resolve/main/g.pt"
        );
        assert_eq!(join(u, " "), None);
    }
}
