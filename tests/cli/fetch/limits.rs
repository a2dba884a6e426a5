//! Downloads that end, through `fidshard fetch`/`run` against the mock hub (part of fetch.rs):
//! a body that always breaks after a few bytes, a trickle, an endless body, a body longer or
//! shorter than announced, a login page served with 200; and the token, which goes to the
//! endpoint's exact origin only (not to a CDN on another port, not to a plain URL).
use super::*;

fn local_vae() -> String {
    fixture("golden/vae").display().to_string()
}

/// No file of fidshard's cache has the final name `model.pt`; with `partial: false`, no
/// `.incomplete` either.
fn nothing_final(env: &Env, partial: bool) {
    let cache = env.dir().join("fidshard-cache");
    assert_eq!(files_ending(&cache, "model.pt"), Vec::<PathBuf>::new());
    if !partial {
        assert_eq!(files_ending(&cache, ".incomplete"), Vec::<PathBuf>::new());
    }
}

/// The last line of stderr, which must hold every part.
fn last_line_has(o: &Output, parts: &[&str]) {
    let err = stderr(o);
    let last = err.trim_end().lines().last().unwrap_or("");
    for part in parts {
        assert!(last.contains(part), "{part} not in {last}\n{err}");
    }
}

#[test]
fn a_body_that_always_breaks_after_a_few_bytes_ends_after_the_attempts() {
    let env = Env::new();
    let url = env
        .hub
        .add_file("partial/model.pt", read("golden/dit/model.pt"));
    env.hub.fault(
        "GET",
        "/files/partial/model.pt",
        &vec![Fault::CloseAfter(10); 40],
    );
    let cfg = env.job("partial", &url, &local_vae(), "");
    let t = Instant::now();
    let o = env.fidshard(
        &["fetch", cfg.to_str().unwrap()],
        &[("FIDSHARD_FETCH_ATTEMPTS", "3")],
    );
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    last_line_has(
        &o,
        &[
            &url,
            "after 3 attempt(s)",
            "closed before the end of the body",
        ],
    );
    assert_eq!(ranges(&env.hub, "/files/partial/model.pt").len(), 3);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    nothing_final(&env, true);
}

#[test]
fn a_trickling_body_is_aborted_below_the_minimum_rate() {
    let env = Env::new();
    let url = env
        .hub
        .add_file("trickle/model.pt", read("golden/dit/model.pt"));
    // 2 KB/s: the whole file would take six minutes.
    env.hub.fault(
        "GET",
        "/files/trickle/model.pt",
        &vec![Fault::Trickle(100, Duration::from_millis(50)); 4],
    );
    let cfg = env.job("trickle", &url, &local_vae(), "");
    let t = Instant::now();
    let o = env.fidshard(
        &["fetch", cfg.to_str().unwrap()],
        &[
            ("FIDSHARD_FETCH_ATTEMPTS", "2"),
            ("FIDSHARD_FETCH_MIN_RATE", "50000"),
            ("FIDSHARD_FETCH_RATE_WINDOW", "0.5"),
        ],
    );
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    last_line_has(
        &o,
        &[
            &url,
            "after 2 attempt(s)",
            "too slow",
            "below the minimum of 50000 bytes/s",
            "FIDSHARD_FETCH_MIN_RATE",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    nothing_final(&env, true);

    let o = env.fidshard(
        &["fetch", cfg.to_str().unwrap()],
        &[("FIDSHARD_FETCH_MIN_RATE", "fast")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    last_line_has(&o, &["$FIDSHARD_FETCH_MIN_RATE=fast", "number of bytes"]);
}

#[test]
fn an_endless_body_without_a_size_stops_at_the_cap() {
    let env = Env::new();
    let url = env
        .hub
        .add_file("endless/model.pt", read("golden/dit/model.pt"));
    env.hub
        .fault("GET", "/files/endless/model.pt", &vec![Fault::Endless; 4]);
    let cfg = env.job("endless", &url, &local_vae(), "");
    let c = cfg.to_str().unwrap();
    let t = Instant::now();
    let o = env.fidshard(&["fetch", c], &[("FIDSHARD_FETCH_MAX_BYTES", "2M")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    last_line_has(
        &o,
        &[
            &url,
            "more than 2097152 bytes without announcing a size",
            "FIDSHARD_FETCH_MAX_BYTES",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    nothing_final(&env, false);
    // The server got one request: what it sends will not change.
    assert_eq!(ranges(&env.hub, "/files/endless/model.pt").len(), 1);

    let o = env.fidshard(&["fetch", c], &[("FIDSHARD_FETCH_MAX_BYTES", "lots")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    last_line_has(&o, &["$FIDSHARD_FETCH_MAX_BYTES=lots", "100G"]);
}

#[test]
fn a_hub_body_longer_or_shorter_than_announced_never_gets_the_final_name() {
    let env = Env::new();
    env.with_golden_repos();
    let dit = read("golden/dit/model.pt");
    let dit_cdn = format!("/cdn/{}", sha256_hex(&dit));
    let blobs = env.hub_cache().join("models--acme--tiny-dit/blobs");
    let cfg = env.job("sizes", "acme/tiny-dit", &local_vae(), "");
    let c = cfg.to_str().unwrap();
    let n = dit.len().to_string();
    for (fault, says) in [
        (Fault::Endless, format!("more than the {n} bytes announced")),
        (
            Fault::ShortBody(1000),
            format!("sends 1000 bytes where {n} were announced"),
        ),
    ] {
        env.hub.fault("GET", &dit_cdn, &vec![fault; 2]);
        let o = env.fidshard(&["fetch", c], &[("FIDSHARD_FETCH_ATTEMPTS", "2")]);
        assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
        last_line_has(&o, &["after 2 attempt(s)", &says]);
        assert!(!blobs.join(sha256_hex(&dit)).exists());
    }
    // With an honest server, the same command completes.
    ok(&env.fidshard(&["fetch", c], &[]));
    assert!(std::fs::read(blobs.join(sha256_hex(&dit))).unwrap() == dit);
}

#[test]
fn a_login_page_served_with_200_never_enters_the_cache() {
    let env = Env::new();
    let page = b"\n<!DOCTYPE html>\n<html><head><title>Sign in - Example</title></head>\
                 <body><form>...</form></body></html>\n"
        .to_vec();
    let url = env.hub.add_file("login/model.pt", page.clone());
    let cfg = env.job("login", &url, &local_vae(), "");
    let c = cfg.to_str().unwrap();
    for verb in ["fetch", "run"] {
        let o = env.fidshard(&[verb, c], &[]);
        assert_eq!(o.status.code(), Some(2), "{verb}: {}", stderr(&o));
        last_line_has(
            &o,
            &[
                &url,
                "expected weights",
                "an HTML page titled \"Sign in - Example\"",
                "login",
                "local path",
            ],
        );
        nothing_final(&env, false);
    }
    assert!(!env.dir().join("login-out/state.sled").exists());

    // The hub's files are checked too: a config.json that is a page is not kept.
    env.hub.add_repo(
        "acme/page-vae",
        &[
            ("config.json", page.clone()),
            (
                "diffusion_pytorch_model.safetensors",
                read("golden/vae/diffusion_pytorch_model.safetensors"),
            ),
        ],
        None,
    );
    let cfg = env.job(
        "page-vae",
        &fixture("golden/dit/model.pt").display().to_string(),
        "acme/page-vae",
        "",
    );
    let o = env.fidshard(&["fetch", cfg.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    last_line_has(
        &o,
        &["config.json", "expected a JSON config", "an HTML page"],
    );
    let repo = env.hub_cache().join("models--acme--page-vae");
    assert!(!repo
        .join("blobs")
        .join(hub_mock::git_blob_id(&page))
        .exists());
    assert!(!repo
        .join("snapshots")
        .join(COMMIT)
        .join("config.json")
        .exists());
}

#[test]
fn the_token_goes_to_the_endpoint_origin_only() {
    let env = Env::new();
    let secret = "hf_OriginTestSecret9";
    let dit = read("golden/dit/model.pt");
    env.hub
        .add_repo("acme/gated-dit", &[("model.pt", dit.clone())], Some(secret));
    // The LFS redirect goes to the same host on another port: another origin.
    let cdn = MockHub::start();
    cdn.add_repo("acme/gated-dit", &[("model.pt", dit.clone())], None);
    env.hub.cdn_at(&cdn.url);
    let cfg = env.job("origin", "acme/gated-dit", &local_vae(), "");
    ok(&env.fidshard(&["fetch", cfg.to_str().unwrap()], &[("HF_TOKEN", secret)]));
    let bearer = format!("Bearer {secret}");
    let hub_log = env.hub.log();
    assert!(
        hub_log.len() >= 3 && hub_log.iter().all(|r| r.auth.as_deref() == Some(&bearer)),
        "{hub_log:?}"
    );
    let cdn_log = cdn.log();
    assert!(
        !cdn_log.is_empty() && cdn_log.iter().all(|r| r.auth.is_none()),
        "the token went to another origin: {cdn_log:?}"
    );
    let snap = env
        .hub_cache()
        .join("models--acme--gated-dit/snapshots")
        .join(COMMIT);
    assert!(std::fs::read(snap.join("model.pt")).unwrap() == dit);

    // A plain URL weight gets no token, even on the endpoint's own origin.
    let url = env.hub.add_file("plain/model.pt", dit.clone());
    env.hub.clear_log();
    let cfg = env.job("plain", &url, &local_vae(), "");
    ok(&env.fidshard(&["fetch", cfg.to_str().unwrap()], &[("HF_TOKEN", secret)]));
    let log = env.hub.log();
    assert!(
        !log.is_empty() && log.iter().all(|r| r.auth.is_none()),
        "{log:?}"
    );
}
