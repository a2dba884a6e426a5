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
    /// The most bytes accepted for a file whose size nobody announced.
    pub max_bytes: u64,
    /// A transfer slower than `min_rate` bytes/s over `rate_window` is aborted (a trickle).
    pub min_rate: u64,
    pub rate_window: Duration,
}

/// `FIDSHARD_FETCH_MAX_BYTES`'s default: 64 GiB, above any DiT or VAE checkpoint.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 64 << 30;

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

/// A byte count from `k` (digits, optionally followed by K, M, G or T: powers of 1024), or
/// `default`; refused (exit 2) when it is not one or is below `lo`.
fn bytes(k: &str, default: u64, lo: u64) -> Result<u64, FetchError> {
    let Some(v) = var(k) else {
        return Ok(default);
    };
    let t = v.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if "kKmMgGtT".contains(c) => (
            &t[..i],
            match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => 40,
            },
        ),
        _ => (t, 0),
    };
    match digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
    {
        Some(n) if n >= lo => Ok(n),
        _ => Err(FetchError::Input(format!(
            "${k}={v}: expected a number of bytes of at least {lo} (a suffix K, M, G or T \
             multiplies by 1024, 1024^2, ...), e.g. {k}=100G"
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
            max_bytes: bytes("FIDSHARD_FETCH_MAX_BYTES", DEFAULT_MAX_BYTES, 1)?,
            min_rate: bytes("FIDSHARD_FETCH_MIN_RATE", 1024, 0)?,
            rate_window: seconds("FIDSHARD_FETCH_RATE_WINDOW", 60.0, 0.1)?,
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

    #[test]
    fn byte_counts_take_binary_suffixes() {
        std::env::set_var("FIDSHARD_TEST_BYTES_A", "3G");
        assert_eq!(bytes("FIDSHARD_TEST_BYTES_A", 7, 1).unwrap(), 3 << 30);
        std::env::set_var("FIDSHARD_TEST_BYTES_A", " 1500 ");
        assert_eq!(bytes("FIDSHARD_TEST_BYTES_A", 7, 1).unwrap(), 1500);
        assert_eq!(bytes("FIDSHARD_TEST_BYTES_UNSET", 7, 1).unwrap(), 7);
        for bad in ["-1", "1.5G", "G", "0", "99999999999T"] {
            std::env::set_var("FIDSHARD_TEST_BYTES_A", bad);
            let e = bytes("FIDSHARD_TEST_BYTES_A", 7, 1)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("$FIDSHARD_TEST_BYTES_A") && e.contains("100G"),
                "{e}"
            );
        }
    }
}
