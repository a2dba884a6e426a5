//! TorchScript models and VAE decoders through the real binary (docs/models.md): exports of
//! the digits demos (fixtures/torchscript, made by its make_fixtures.py from the published
//! DiT and REPA code) sample the same images as the native path, within the golden README's
//! tolerances (no uint8 value off by more than 2, at least 99.5% identical).
use crate::sit::sit_job;
use crate::support::*;
use std::path::Path;

/// The digits DiT job: 12 samples, 10 DDPM steps, cfg 4, on two CPU workers; `model` and
/// `vae` are the YAML of those keys.
fn digits_job(dir: &Path, name: &str, model: &str, vae: &str) -> std::path::PathBuf {
    let y = format!(
        "{model}{vae}num_samples: 12\nseed: 3\nlabels: balanced\ncfg_scale: 4.0\nsteps: \"10\"\n\
         batch_size: 4\nshard_size: 6\ndevices: {{cpu: 2}}\nout_dir: {name}-out\n"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, y).unwrap();
    path
}

/// Runs the job and returns its images (checking exit 0).
fn run_images(cfg: &Path) -> Vec<u8> {
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = cfg.with_file_name(format!(
        "{}-out",
        cfg.file_stem().unwrap().to_string_lossy()
    ));
    read_npz_u8(&out.join("samples.npz")).1
}

fn fingerprint(cfg: &Path) -> serde_json::Value {
    let name = cfg.file_stem().unwrap().to_string_lossy();
    read_json(&cfg.with_file_name(format!("{name}-out/fingerprint.json"))).unwrap()
}

#[test]
fn torchscript_dit_and_vae_give_the_native_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = fixture("demo-digits/dit/config.json");
    let native_model = format!(
        "model:\n  config: {}\n  checkpoint: {}\n",
        config.display(),
        fixture("demo-digits/dit/model.pt").display()
    );
    // A TorchScript model's config needs only the shape facts.
    std::fs::write(
        dir.join("shapes.json"),
        r#"{"input_size": 8, "in_channels": 4, "num_classes": 10, "learn_sigma": true}"#,
    )
    .unwrap();
    let script_model = format!(
        "model:\n  config: shapes.json\n  torchscript: {}\n",
        fixture("torchscript/dit.ts").display()
    );
    let native_vae = format!("vae: {}\n", fixture("demo-digits/vae").display());
    // The demo VAE's scaling_factor (its config.json), which the native path divides by.
    let script_vae = format!(
        "vae: {{torchscript: {}, downsample: 2, latent_channels: 4}}\nlatent_scale: 1.2424200773239136\n",
        fixture("torchscript/vae-decoder.ts").display()
    );
    let native = digits_job(dir, "native", &native_model, &native_vae);
    let want = run_images(&native);
    let model = digits_job(dir, "model", &script_model, &native_vae);
    assert_images_close("model.torchscript", &run_images(&model), &want);
    let vae = digits_job(dir, "vae", &native_model, &script_vae);
    assert_images_close("vae.torchscript", &run_images(&vae), &want);

    // The fingerprint says which file is TorchScript; the native job's has no such key.
    assert_eq!(fingerprint(&model)["model_format"], "torchscript");
    assert_eq!(
        fingerprint(&vae)["vae_format"],
        "torchscript, downsample 2, latent_channels 4"
    );
    let plain = fingerprint(&native);
    assert!(plain.get("model_format").is_none() && plain.get("vae_format").is_none());
    // The resolved job names the TorchScript files and is itself a job of the same fingerprint.
    for job in [&model, &vae] {
        let resolved = job.with_file_name(format!(
            "{}-out/job.resolved.yaml",
            job.file_stem().unwrap().to_string_lossy()
        ));
        let text = std::fs::read_to_string(&resolved).unwrap();
        assert!(text.contains("torchscript: "), "{text}");
        let o = fidshard(&["status", resolved.to_str().unwrap(), "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(st["state"], "complete", "{st}");
    }
}

#[test]
fn torchscript_sit_gives_repas_images() {
    let tmp = tempfile::tempdir().unwrap();
    let name = "sde-linear-cfg1.8-interval";
    let cfg = sit_job(
        tmp.path(),
        name,
        "devices: {cpu: 2}\nshard_size: 8\nbatch_size: 5\n",
    );
    let native = fixture("demo-digits-sit/sit/model.safetensors");
    let script = fixture("torchscript/sit.ts");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("checkpoint: {}", native.display()),
        &format!("torchscript: {}", script.display()),
    );
    assert!(text.contains("torchscript: "), "{text}");
    std::fs::write(&cfg, text).unwrap();
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (shape, got) = read_npz_u8(&tmp.path().join("out/samples.npz"));
    let (want_shape, want) = read_npz_u8(&fixture(&format!(
        "demo-digits-sit/jobs/{name}/expected.npz"
    )));
    assert_eq!(shape, want_shape);
    assert_images_close("sit.ts", &got, &want);
}
