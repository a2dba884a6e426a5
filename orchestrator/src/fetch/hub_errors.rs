//! What the hub's refusals mean for the user (401, 403, 404 with the hub's `X-Error-Code`):
//! a gated repo and how to log in, a token that was refused (named by where it came from,
//! never by its value), a repo, revision or file that does not exist.
use super::error::FetchError;
use super::http::{Failure, Kind};
use super::settings::Settings;
use crate::job::hub::RepoRef;

/// The message for an answer that retrying cannot change.
pub(super) fn refused(
    s: &Settings,
    repo: &RepoRef,
    file: Option<&str>,
    url: &str,
    f: &Failure,
) -> FetchError {
    let page = format!("{}/{}", s.endpoint, repo.id());
    let no_token = || {
        format!(
            "no Hugging Face token was found (HF_TOKEN is unset and there is no token file \
             at {})",
            s.token_file.display()
        )
    };
    let m = &f.message;
    let gated = f.hub_code.as_deref() == Some("GatedRepo");
    let msg = match (f.kind, &s.token) {
        (Kind::Refused(401 | 403), None) if gated => format!(
            "`{}` is a gated repo ({m}) and {}: accept its conditions at {page}, then log in \
             with `hf auth login` (or set HF_TOKEN) and run again",
            repo.id(),
            no_token()
        ),
        (Kind::Refused(401 | 403), Some(t)) if gated => format!(
            "`{}` is a gated repo and the token from {} has no access to it ({m}): accept \
             its conditions at {page} with that account, or use another token",
            repo.id(),
            t.from
        ),
        (Kind::Refused(401), None) => format!(
            "`{}`: the hub answered {m}: the repo is private or does not exist, and {}; log \
             in with `hf auth login` (or set HF_TOKEN) if it is private, else check the name",
            repo.id(),
            no_token()
        ),
        (Kind::Refused(401), Some(t)) => format!(
            "`{}`: the hub refused the token from {} ({m}): it is invalid or expired, or the \
             repo does not exist; log in again with `hf auth login` or set a valid HF_TOKEN",
            repo.id(),
            t.from
        ),
        (Kind::Refused(403), Some(t)) => format!(
            "the token from {} may not read `{}` ({m}): use a token with read access to it",
            t.from,
            repo.id()
        ),
        (Kind::Refused(403), None) => format!(
            "`{}`: access denied ({m}); log in with `hf auth login` or set HF_TOKEN",
            repo.id()
        ),
        (Kind::Refused(404), _) => match (f.hub_code.as_deref(), file) {
            (Some("RevisionNotFound"), _) => format!(
                "`{}` has no revision `{}` on {} ({m})",
                repo.id(),
                repo.revision(),
                s.endpoint
            ),
            (Some("EntryNotFound"), Some(file)) | (None, Some(file)) => {
                format!("`{repo}`: the hub has no file {file} ({m}, {url})")
            }
            _ => format!(
                "`{}` was not found on {} ({m}): check the repo id",
                repo.id(),
                s.endpoint
            ),
        },
        _ => format!("{url}: {m}"),
    };
    FetchError::Input(msg)
}
