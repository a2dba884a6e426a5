//! End-to-end tests of `fidshard sample`: every golden job reproduced from its `job.json`
//! through the real binary, batch-independence of the bytes, and the bad-input errors.
use crate::support::*;
use std::path::Path;

fn check_job(name: &str, checkpoint: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(tmp.path(), name, checkpoint, "");
    let out = tmp.path().join("out");
    let o = fidshard(&[
        "sample",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-latents",
    ]);
    assert!(o.status.success(), "{name}: {}", stderr(&o));

    let expected = read_safetensors(&fixture(&format!(
        "golden/jobs/{name}/expected-latents.safetensors"
    )));
    let n = expected["labels"].shape[0];
    let mut labels = Vec::new();
    let mut latents = Vec::new();
    for i in 0..n {
        let f = out.join(format!("latents/{i:06}.safetensors"));
        let t = read_safetensors(&f);
        labels.push(t["label"].values[0]);
        latents.extend_from_slice(&t["latent"].values);
    }
    assert_eq!(labels, expected["labels"].values, "{name}: labels");
    // labels.json beside the PNGs says the same.
    let written: std::collections::BTreeMap<String, i64> =
        serde_json::from_str(&std::fs::read_to_string(out.join("labels.json")).unwrap()).unwrap();
    let written: Vec<f64> = (0..n)
        .map(|i| written[&format!("{i:06}.png")] as f64)
        .collect();
    assert_eq!(written, expected["labels"].values, "{name}: labels.json");
    let err = rel_l2(&latents, &expected["latents"].values);
    assert!(err < 1e-4, "{name}: latents rel L2 {err:e}");

    let (shape, want) = read_npz_u8(&fixture(&format!("golden/jobs/{name}/expected.npz")));
    assert_eq!(shape, vec![n as u64, 64, 64, 3]);
    assert_images_close(name, &read_pngs(&out, n), &want);
}

#[test]
fn golden_job_cfg4_steps10_random() {
    check_job(JOBS[0], "golden/dit/model.pt");
}

#[test]
fn golden_job_nocfg_steps10_balanced() {
    check_job(JOBS[1], "golden/dit/model.safetensors");
}

#[test]
fn golden_job_cfg1_5_ddim25_eta0() {
    check_job(JOBS[2], "golden/dit/train-checkpoint.pt");
}

#[test]
fn golden_job_cfg3_allchannels_steps10() {
    check_job(JOBS[3], "golden/dit/model.pt");
}

/// One batch, batches of 1, and shuffled sub-ranges with other batch sizes give the same bytes.
#[test]
fn bytes_do_not_depend_on_batching_or_ranges() {
    for name in [JOBS[0], JOBS[2]] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = job_yaml(tmp.path(), name, "golden/dit/model.pt", "batch_size: 32\n");
        let c = cfg.to_str().unwrap();
        let dir = |d: &str| tmp.path().join(d).to_str().unwrap().to_string();
        let n = if name == JOBS[0] { 12 } else { 8 };
        assert!(fidshard(&["sample", c, "--out", &dir("one")])
            .status
            .success());
        assert!(
            fidshard(&["sample", c, "--out", &dir("ones"), "--batch-size", "1"])
                .status
                .success()
        );
        let ranges = if n == 12 {
            vec![("7..12", "2"), ("0..3", "3"), ("3..7", "4")]
        } else {
            vec![("5..8", "2"), ("0..1", "1"), ("1..5", "3")]
        };
        for (r, b) in ranges {
            let o = fidshard(&[
                "sample",
                c,
                "--out",
                &dir("ranges"),
                "--range",
                r,
                "--batch-size",
                b,
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let one = png_bytes(&tmp.path().join("one"), n);
        assert_eq!(
            one,
            png_bytes(&tmp.path().join("ones"), n),
            "{name}: batch 1"
        );
        assert_eq!(
            one,
            png_bytes(&tmp.path().join("ranges"), n),
            "{name}: sub-ranges"
        );
    }
}

/// Runs `sample` on a config and expects exit 2 and a message with all of `needles`; also
/// checks that a PNG already in the out dir is left untouched.
fn expect_input_error(cfg: &Path, needles: &[&str]) {
    let out = cfg.parent().unwrap().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let keep = out.join("000000.png");
    std::fs::write(&keep, b"earlier result").unwrap();
    let o = fidshard(&[
        "sample",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in: {err}");
    }
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    assert_eq!(std::fs::read(&keep).unwrap(), b"earlier result");
}

#[test]
fn unknown_config_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(
        tmp.path(),
        JOBS[0],
        "golden/dit/model.pt",
        "cfg_sacle: 2.0\n",
    );
    expect_input_error(
        &cfg,
        &["cfg_sacle", "unknown key", &cfg.display().to_string()],
    );
}

#[test]
fn unmeetable_respacing_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("steps: \"10\"", "steps: \"ddim600\"");
    std::fs::write(&cfg, text).unwrap();
    expect_input_error(&cfg, &["`steps`", "ddim600"]);
}

#[test]
fn vae_folder_without_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let vae = tmp.path().join("vae");
    std::fs::create_dir(&vae).unwrap();
    std::fs::copy(
        fixture("golden/vae/diffusion_pytorch_model.safetensors"),
        vae.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &fixture("golden/vae").display().to_string(),
        vae.to_str().unwrap(),
    );
    std::fs::write(&cfg, text).unwrap();
    expect_input_error(&cfg, &["config.json", "`vae`"]);
}

#[test]
fn num_classes_disagreeing_with_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // A preset-free config JSON claiming 1000 classes for the 10-class checkpoint.
    let json = std::fs::read_to_string(fixture("golden/dit/config.json"))
        .unwrap()
        .replace("\"num_classes\": 10", "\"num_classes\": 1000");
    let dit_cfg = tmp.path().join("dit.json");
    std::fs::write(&dit_cfg, json).unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &fixture("golden/dit/config.json").display().to_string(),
            dit_cfg.to_str().unwrap(),
        )
        .replace("num_classes: 10\n", "");
    std::fs::write(&cfg, text).unwrap();
    expect_input_error(&cfg, &["model.pt", "embedding_table", "num_classes: 10"]);
}

#[test]
fn truncated_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("golden/dit/model.pt")).unwrap();
    let ckpt = tmp.path().join("truncated.pt");
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &fixture("golden/dit/model.pt").display().to_string(),
        ckpt.to_str().unwrap(),
    );
    std::fs::write(&cfg, text).unwrap();
    expect_input_error(&cfg, &["truncated.pt", "truncated"]);
}

#[test]
fn checkpoint_without_state_dict() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "bad/not-a-state-dict.pt", "");
    expect_input_error(&cfg, &["not-a-state-dict.pt", "state dict"]);
}

#[test]
fn safetensors_with_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    // The golden weights with final_layer.linear.weight cut to its first 16 rows.
    let ckpt = tmp.path().join("wrong-shape.safetensors");
    rewrite_golden_safetensors(&ckpt, |name, shape, data| {
        if name == "final_layer.linear.weight" {
            let row = data.len() / shape[0];
            shape[0] = 16;
            data.truncate(16 * row);
        }
    });
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &fixture("golden/dit/model.pt").display().to_string(),
        ckpt.to_str().unwrap(),
    );
    std::fs::write(&cfg, text).unwrap();
    expect_input_error(
        &cfg,
        &[
            "wrong-shape.safetensors",
            "final_layer.linear.weight",
            "[16, 64]",
            "[32, 64]",
        ],
    );
}

#[test]
fn bad_command_lines_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_yaml(tmp.path(), JOBS[0], "golden/dit/model.pt", "");
    let c = cfg.to_str().unwrap();
    for args in [
        vec!["sample", c, "--out", "x", "--range", "5..2"],
        vec!["sample", c, "--out", "x", "--range", "0..13"],
        vec!["sample", c, "--out", "x", "--device", "tpu"],
        vec!["sample", c],
        vec!["frobnicate"],
        vec!["sample", "/nonexistent/job.yaml", "--out", "x"],
    ] {
        let o = fidshard(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}
