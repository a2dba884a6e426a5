//! `notify:` of a job file: what to run, or where to POST, when `run` ends (notify/ does it).
//! Never part of the job's fingerprint: adding or changing a hook changes no pixel, and a
//! running job's hooks may be edited between runs.
use serde::Deserialize;

/// How a `run` ended, as a hook sees it (`FIDSHARD_STATE`, the `on:` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Event {
    /// Every sample of this coordinator's share exists (the whole job: `samples.npz` written).
    Complete,
    /// It stopped on an error, or shards ran out of retries.
    Failed,
    /// A signal (preemption, Ctrl-C, the time limit) stopped it; running again resumes.
    Interrupted,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::Complete, Event::Failed, Event::Interrupted];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Complete => "complete",
            Event::Failed => "failed",
            Event::Interrupted => "interrupted",
        }
    }
}

/// The resolved `notify:` section: at least one of `command` and `webhook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notify {
    /// A shell command line, run with `/bin/sh -c` and the `FIDSHARD_*` variables.
    pub command: Option<String>,
    /// An `http://` or `https://` URL that gets a POST of the status JSON.
    pub webhook: Option<String>,
    /// The ends that fire the hooks (default all three).
    pub on: Vec<Event>,
}

impl Notify {
    /// Whether `event` fires the hooks.
    pub fn fires_on(&self, event: Event) -> bool {
        self.on.contains(&event)
    }

    /// Checks `notify:` as written; `Err((key, message))` names the key under `notify` and the
    /// fix.
    pub fn new(
        command: Option<String>,
        webhook: Option<String>,
        on: Option<Vec<Event>>,
    ) -> Result<Notify, (&'static str, String)> {
        if command.is_none() && webhook.is_none() {
            return Err((
                "notify",
                "give `command` (a shell command line) and/or `webhook` (an http:// or https:// URL), or remove the section".into(),
            ));
        }
        if command.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err((
                "notify.command",
                "is empty; give a shell command line (e.g. `mail -s \"fidshard $FIDSHARD_STATE\" me@example.org < /dev/null`) or remove the key".into(),
            ));
        }
        if let Some(url) = &webhook {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err((
                    "notify.webhook",
                    format!("`{url}` is not an http:// or https:// URL with a host"),
                ));
            }
        }
        let on = on.unwrap_or_else(|| Event::ALL.to_vec());
        if on.is_empty() {
            return Err((
                "notify.on",
                "is empty; list some of complete, failed, interrupted, or remove the key (all three)".into(),
            ));
        }
        Ok(Notify {
            command,
            webhook,
            on,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_a_hook_and_checks_the_url_and_the_events() {
        let n = Notify::new(Some("true".into()), None, None).unwrap();
        assert!(Event::ALL.iter().all(|&e| n.fires_on(e)));
        let n = Notify::new(
            None,
            Some("http://127.0.0.1:9/x".into()),
            Some(vec![Event::Failed]),
        )
        .unwrap();
        assert!(n.fires_on(Event::Failed) && !n.fires_on(Event::Complete));
        assert_eq!(Notify::new(None, None, None).unwrap_err().0, "notify");
        assert_eq!(
            Notify::new(Some(" ".into()), None, None).unwrap_err().0,
            "notify.command"
        );
        for bad in ["ftp://host/x", "http://", "hooks.slack.com/x", "https:///x"] {
            assert_eq!(
                Notify::new(None, Some(bad.into()), None).unwrap_err().0,
                "notify.webhook",
                "{bad}"
            );
        }
        assert_eq!(
            Notify::new(Some("true".into()), None, Some(vec![]))
                .unwrap_err()
                .0,
            "notify.on"
        );
    }
}
