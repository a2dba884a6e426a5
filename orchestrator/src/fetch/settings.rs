//! What the environment says about downloading: the hub endpoint, the token, offline mode, the
//! caches, and the retry policy. The Hugging Face variables mean what they mean to Python's
//! huggingface_hub (`HF_ENDPOINT`, `HF_TOKEN`, `HF_TOKEN_PATH`, `HF_HOME`, `HF_HUB_OFFLINE`); the
//! `FIDSHARD_FETCH_*` ones tune the retries (docs/configuration.md).
use super::error::FetchError;
use crate::job::hub::CacheRoot;
use std::path::PathBuf;
use std::time::Duration;

/// How hard to try.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    /// Failed attempts in a row (without a byte of progress) before giving up.
    pub attempts: u32,
    /// Wait before the first retry; doubles each retry, up to `backoff_max`, with jitter.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// A transfer that receives no byte for this long is aborted and retried.
    pub stall: Duration,
    /// Connecting (and a whole small request: listing, metadata) may take this long.
    pub connect: Duration,
}

/// The hub token and where it came from. Its value is never printed: `Debug` hides it.
#[derive(Clone)]
pub(crate) struct Token {
    value: String,
    /// `HF_TOKEN` or the token file's path.
    pub from: String,
}

impl Token {
    pub fn header(&self) -> String {
        format!("Bearer {}", self.value)
    }
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Token(from {})", self.from)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `$HF_ENDPOINT` without a trailing `/` (default `https://huggingface.co`).
    pub endpoint: String,
    pub token: Option<Token>,
    /// Where a token file would be (for the message when there is none).
    pub token_file: PathBuf,
    /// `HF_HUB_OFFLINE`: only the caches, no network at all.
    pub offline: bool,
    pub policy: Policy,
    pub hub_cache: CacheRoot,
    pub own_cache: CacheRoot,
}

fn var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// huggingface_hub's truth values.
fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// A number of seconds from `k`, or `default`; refused (exit 2) when not a finite number in
/// `[lo, 86400]`.
fn seconds(k: &str, default: f64, lo: f64) -> Result<Duration, FetchError> {
    let Some(v) = var(k) else {
        return Ok(Duration::from_secs_f64(default));
    };
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (lo..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(FetchError::Input(format!(
            "${k}={v}: expected a number of seconds from {lo} to 86400"
        ))),
    }
}

impl Policy {
    pub fn from_env() -> Result<Policy, FetchError> {
        let attempts = match var("FIDSHARD_FETCH_ATTEMPTS") {
            None => 5,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(FetchError::Input(format!(
                        "$FIDSHARD_FETCH_ATTEMPTS={v}: expected a whole number from 1 to 1000"
                    )))
                }
            },
        };
        let backoff = seconds("FIDSHARD_FETCH_BACKOFF", 1.0, 0.0)?;
        let backoff_max = seconds("FIDSHARD_FETCH_BACKOFF_MAX", 60.0, 0.0)?.max(backoff);
        Ok(Policy {
            attempts,
            backoff,
            backoff_max,
            stall: seconds("FIDSHARD_FETCH_STALL", 60.0, 0.1)?,
            connect: seconds("FIDSHARD_FETCH_CONNECT_TIMEOUT", 30.0, 0.1)?,
        })
    }
}

impl Settings {
    pub fn from_env() -> Result<Settings, FetchError> {
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".to_string())
            .trim()
            .trim_end_matches('/')
            .to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(FetchError::Input(format!(
                "$HF_ENDPOINT={endpoint}: expected an https:// (or http://) address such as \
                 https://huggingface.co"
            )));
        }
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(var("HOME").unwrap_or_else(|| "/".into())).join(".cache")
                })
                .join("huggingface")
        });
        let token_file = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = match var("HF_TOKEN") {
            Some(t) => Some(Token {
                value: t.trim().to_string(),
                from: "$HF_TOKEN".to_string(),
            }),
            None => std::fs::read_to_string(&token_file)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map(|value| Token {
                    value,
                    from: token_file.display().to_string(),
                }),
        };
        Ok(Settings {
            endpoint,
            token,
            token_file,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
            policy: Policy::from_env()?,
            hub_cache: CacheRoot::from_env(),
            own_cache: CacheRoot::fidshard(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_values_and_the_token_stays_hidden() {
        assert!(is_true("1") && is_true("yes") && is_true(" True ") && is_true("ON"));
        assert!(!is_true("0") && !is_true("false") && !is_true(""));
        let t = Token {
            value: "hf_secret".into(),
            from: "$HF_TOKEN".into(),
        };
        assert_eq!(format!("{t:?}"), "Token(from $HF_TOKEN)");
        assert_eq!(t.header(), "Bearer hf_secret");
    }
}
