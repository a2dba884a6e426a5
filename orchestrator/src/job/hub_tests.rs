use super::*;

fn root(dir: &Path) -> CacheRoot {
    CacheRoot {
        path: dir.to_path_buf(),
        from: "$HF_HUB_CACHE",
    }
}

fn repo(s: &str) -> RepoRef {
    match remote(Path::new(s), Path::new("/nonexistent/x")).unwrap() {
        Some(Remote::Repo(r)) => r,
        other => panic!("{s}: {other:?}"),
    }
}

#[test]
fn the_accepted_forms() {
    let r = repo("stabilityai/sd-vae-ft-ema");
    assert_eq!(
        (r.org.as_str(), r.name.as_str()),
        ("stabilityai", "sd-vae-ft-ema")
    );
    assert_eq!((r.revision.as_deref(), r.path.as_deref()), (None, None));
    assert_eq!(r.revision(), "main");
    assert_eq!(repo("a.b/c_d-1").id(), "a.b/c_d-1");
    let r = repo("acme/dit@v1.0/ckpt/model.pt");
    assert_eq!(r.revision.as_deref(), Some("v1.0"));
    assert_eq!(r.path.as_deref(), Some("ckpt/model.pt"));
    assert_eq!(r.to_string(), "acme/dit@v1.0/ckpt/model.pt");
    assert_eq!(r.hf_download(), "hf download acme/dit --revision v1.0");
    let r = repo("hf://acme/pipe/vae/");
    assert_eq!(
        (r.revision.as_deref(), r.path.as_deref()),
        (None, Some("vae"))
    );
    let r = repo("hf://acme/dit@0123456789abcdef0123456789abcdef01234567");
    assert!(is_commit(r.revision()));
    assert_eq!(
        r.folder(&root(Path::new("/c"))),
        Path::new("/c/models--acme--dit")
    );

    let url = "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt";
    let Some(Remote::Url(u)) = remote(Path::new(url), Path::new("/x")).unwrap() else {
        panic!()
    };
    assert_eq!(u.file_name(), "DiT-XL-2-256x256.pt");
    let p = u.cached_path(&root(Path::new("/c")));
    assert!(p.starts_with("/c/downloads") && p.ends_with("DiT-XL-2-256x256.pt"));
    let odd = UrlRef {
        url: "http://127.0.0.1:9/a%20b/?x=1".into(),
    };
    assert_eq!(odd.file_name(), "download");
    let odd = UrlRef {
        url: "http://h/m/w e?i".into(),
    };
    assert_eq!(odd.file_name(), "w_e");
}

#[test]
fn local_paths_and_malformed_references() {
    for local in [
        "vae",
        "/abs/path",
        "a/b/c",
        "./vae",
        "../vae",
        "a/",
        "a b/c",
        "pretrained/vae.d/x",
        "pretrained/dit/model.pt",
    ] {
        assert_eq!(
            remote(Path::new(local), Path::new("/nonexistent")),
            Ok(None),
            "{local}"
        );
    }
    // A folder of that name beside the job file wins.
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(remote(Path::new("acme/vae"), tmp.path()), Ok(None));
    for bad in [
        "hf://acme",
        "hf://acme/x@/y",
        "hf://a/b/../c",
        "s3://bucket/x.pt",
        "https://",
    ] {
        let e = remote(Path::new(bad), Path::new("/x")).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
    }
    assert_eq!(
        parse_sha256(&format!("sha256:{}", "AB".repeat(32))).unwrap(),
        "ab".repeat(32)
    );
    assert!(parse_sha256("abc").unwrap_err().contains("64 hexadecimal"));
}

#[test]
fn finds_vae_at_the_root_or_in_vae_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models--acme--tiny-vae");
    let snap = dir.join("snapshots/abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), "abc123\n").unwrap();
    let r = root(tmp.path());
    let local = Path::new("/job/acme/tiny-vae");
    let id = repo("acme/tiny-vae");
    let err = resolve(&r, &id, Wanted::VaeFolder, local).unwrap_err();
    assert!(err.contains("no config.json"), "{err}");
    std::fs::create_dir_all(snap.join("vae")).unwrap();
    std::fs::write(snap.join("vae/config.json"), "{}").unwrap();
    let err = resolve(&r, &id, Wanted::VaeFolder, local).unwrap_err();
    assert!(err.contains("no diffusion_pytorch_model"), "{err}");
    std::fs::write(snap.join("vae/diffusion_pytorch_model.safetensors"), "w").unwrap();
    assert_eq!(
        resolve(&r, &id, Wanted::VaeFolder, local).unwrap(),
        snap.join("vae")
    );
    std::fs::write(snap.join("config.json"), "{}").unwrap();
    std::fs::write(snap.join("diffusion_pytorch_model.bin"), "w").unwrap();
    assert_eq!(resolve(&r, &id, Wanted::VaeFolder, local).unwrap(), snap);
    let sub = repo("hf://acme/tiny-vae/vae");
    assert_eq!(
        resolve(&r, &sub, Wanted::VaeFolder, local).unwrap(),
        snap.join("vae")
    );

    // Any one weights file at the root counts.
    assert_eq!(
        resolve(&r, &id, Wanted::CheckpointFile, local).unwrap(),
        snap.join("diffusion_pytorch_model.bin")
    );
    std::fs::remove_file(snap.join("diffusion_pytorch_model.bin")).unwrap();
    std::fs::write(snap.join("model.pt"), "x").unwrap();
    assert_eq!(
        resolve(&r, &id, Wanted::CheckpointFile, local).unwrap(),
        snap.join("model.pt")
    );
    std::fs::write(snap.join("model.safetensors"), "x").unwrap();
    let err = resolve(&r, &id, Wanted::CheckpointFile, local).unwrap_err();
    assert!(err.contains("model.pt, model.safetensors"), "{err}");
    assert!(err.contains("`acme/tiny-vae@main/model.pt`"), "{err}");
    let file = repo("acme/tiny-vae@main/model.safetensors");
    assert_eq!(
        resolve(&r, &file, Wanted::CheckpointFile, local).unwrap(),
        snap.join("model.safetensors")
    );

    // A revision without refs; refs/main naming a missing snapshot; then no refs: the single
    // snapshot.
    std::fs::write(snap.join("diffusion_pytorch_model.safetensors"), "w").unwrap();
    let err = resolve(&r, &repo("acme/tiny-vae@v2"), Wanted::VaeFolder, local).unwrap_err();
    assert!(
        err.contains("revision `v2`") && err.contains("--revision v2"),
        "{err}"
    );
    std::fs::write(dir.join("refs/main"), "def456").unwrap();
    let err = resolve(&r, &id, Wanted::VaeFolder, local).unwrap_err();
    assert!(err.contains("def456") && err.contains("hf download acme/tiny-vae"));
    std::fs::remove_file(dir.join("refs/main")).unwrap();
    assert_eq!(resolve(&r, &id, Wanted::VaeFolder, local).unwrap(), snap);
    std::fs::create_dir_all(dir.join("snapshots/def456")).unwrap();
    let err = resolve(&r, &id, Wanted::VaeFolder, local).unwrap_err();
    assert!(err.contains("2 snapshots"), "{err}");
}

#[test]
fn a_missing_repo_names_both_places_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let err = resolve(
        &root(tmp.path()),
        &repo("stabilityai/sd-vae-ft-ema"),
        Wanted::VaeFolder,
        Path::new("/job/stabilityai/sd-vae-ft-ema"),
    )
    .unwrap_err();
    assert!(!err.contains('\n'));
    for part in [
        "/job/stabilityai/sd-vae-ft-ema",
        "models--stabilityai--sd-vae-ft-ema",
        "$HF_HUB_CACHE",
        "hf download stabilityai/sd-vae-ft-ema",
        "download it with `fidshard fetch` (which `run` and `validate` do first)",
        "give a local folder",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
}

#[test]
fn known_digests_come_from_blob_names_or_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let sha = "ab".repeat(32);
    let blob = tmp.path().join("blobs").join(&sha);
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, "x").unwrap();
    let link = tmp.path().join("model.pt");
    std::os::unix::fs::symlink(format!("blobs/{sha}"), &link).unwrap();
    assert_eq!(known_sha256(&link), Some(sha.clone()));
    let plain = tmp.path().join("DiT.pt");
    std::fs::write(&plain, "x").unwrap();
    assert_eq!(known_sha256(&plain), None);
    std::fs::write(sha256_record(&plain), format!("{sha}\n")).unwrap();
    assert_eq!(known_sha256(&plain), Some(sha));
}

#[test]
fn the_model_of_a_pipeline_repo_is_its_transformer_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models--acme--dit-pipe");
    let snap = dir.join("snapshots/abc123");
    std::fs::create_dir_all(snap.join("transformer")).unwrap();
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), "abc123\n").unwrap();
    let r = root(tmp.path());
    let local = Path::new("/job/acme/dit-pipe");
    let id = repo("acme/dit-pipe");
    std::fs::write(snap.join("transformer/config.json"), "{}").unwrap();
    let err = resolve(&r, &id, Wanted::Model, local).unwrap_err();
    assert!(err.contains("no diffusion_pytorch_model"), "{err}");
    let weights = snap.join("transformer/diffusion_pytorch_model.safetensors");
    std::fs::write(&weights, "w").unwrap();
    let t = snap.join("transformer");
    assert_eq!(resolve(&r, &id, Wanted::Model, local).unwrap(), t);
    let named = repo("hf://acme/dit-pipe/transformer");
    assert_eq!(resolve(&r, &named, Wanted::Model, local).unwrap(), t);
    let file = repo("hf://acme/dit-pipe/transformer/diffusion_pytorch_model.safetensors");
    assert_eq!(resolve(&r, &file, Wanted::Model, local).unwrap(), weights);
    // Without transformer/, a root config.json that is no DiT's leaves the one checkpoint.
    std::fs::remove_dir_all(&t).unwrap();
    std::fs::write(snap.join("config.json"), r#"{"_class_name": "Other"}"#).unwrap();
    std::fs::write(snap.join("model.pt"), "x").unwrap();
    assert_eq!(
        resolve(&r, &id, Wanted::Model, local).unwrap(),
        snap.join("model.pt")
    );
}
