//! `notify.webhook`: one HTTP POST of the status JSON (`Content-Type: application/json`),
//! http:// or https:// (ureq with rustls and the webpki roots), bounded in time; no retry (a
//! notification that arrives late is worth less than a run that ends on time).
use std::time::Duration;

/// The whole request (connect, send, answer) must be done within this.
pub(super) const TIMEOUT: Duration = Duration::from_secs(30);

const USER_AGENT: &str = concat!("fidshard/", env!("CARGO_PKG_VERSION"));

/// POSTs `body` to `url`; `Err` says why it did not arrive (the server's status and the first
/// line of its answer, or the connection's error).
pub(super) fn post(url: &str, body: &str) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .user_agent(USER_AGENT)
        .build();
    match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, answer)) => {
            let text = answer.into_string().unwrap_or_default();
            let first: String = text
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            Err(format!("{url} answered HTTP {code} {first}")
                .trim_end()
                .to_string())
        }
        Err(e) => Err(format!("{url}: {e}")),
    }
}
