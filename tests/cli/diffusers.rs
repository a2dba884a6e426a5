//! Diffusers-format DiT checkpoints through the real binary (docs/models.md): `validate` and a
//! tiny `run` of a job whose `model.checkpoint` is the `transformer/` folder of
//! fixtures/diffusers-dit (a random `DiTTransformer2DModel` saved by diffusers), and `fetch` of a
//! pipeline repo named by its id alone (`model.checkpoint: acme/tiny-dit-pipe`, the spelling of
//! `facebook/DiT-XL-2-256`), which downloads its transformer/ and vae/ files and nothing else.
use crate::support::hub_mock::{self, MockHub, COMMIT};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn job(dir: &Path, name: &str, checkpoint: &str, vae: &str, extra: &str) -> PathBuf {
    let y = format!(
        "model:\n  checkpoint: {checkpoint}\nvae: {vae}\n{extra}num_samples: 4\nseed: 1\n\
         steps: \"2\"\ncfg_scale: 1.5\nbatch_size: 2\nshard_size: 4\ndevices: {{cpu: 1}}\n\
         out_dir: {name}-out\n"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, y).unwrap();
    path
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(o));
    out
}

#[test]
fn a_diffusers_dit_folder_validates_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = fixture("diffusers-dit/transformer");
    let vae = fixture("golden/vae");
    let cfg = job(
        tmp.path(),
        "d",
        folder.to_str().unwrap(),
        vae.to_str().unwrap(),
        "",
    );
    // The architecture comes from the folder's config.json: 2 layers of 2 x 16, patch 2, 8x8
    // latents (64x64 pixels with the golden VAE's x8).
    let out = ok(&fidshard(&["validate", cfg.to_str().unwrap()]));
    assert!(
        out.contains("4 samples of 64x64") && out.contains("depth 2, hidden 32, patch 2"),
        "{out}"
    );
    // Its weights file names it as well (config.json beside it).
    let weights = folder.join("diffusion_pytorch_model.safetensors");
    let by_file = job(
        tmp.path(),
        "f",
        weights.to_str().unwrap(),
        vae.to_str().unwrap(),
        "",
    );
    ok(&fidshard(&["validate", by_file.to_str().unwrap()]));
    ok(&fidshard(&["run", cfg.to_str().unwrap()]));
    let (shape, _) = read_npz_u8(&tmp.path().join("d-out/samples.npz"));
    assert_eq!(shape, vec![4, 64, 64, 3]);

    // A preset beside it, or a wrong class count, is refused naming the key.
    let bad = job(
        tmp.path(),
        "p",
        folder.to_str().unwrap(),
        vae.to_str().unwrap(),
        "num_classes: 1000\n",
    );
    let line = one_error_line(&fidshard(&["validate", bad.to_str().unwrap()]));
    assert!(
        line.contains("`num_classes`: 1000 disagrees with num_classes 10"),
        "{line}"
    );
    // A tensor missing from the weights: the model check names the file and the key.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(folder.join("config.json"), broken.join("config.json")).unwrap();
    let bytes = read(&weights);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != "transformer_blocks.1.attn1.to_v.weight")
        .collect();
    let dst = broken.join("diffusion_pytorch_model.safetensors");
    safetensors::serialize_to_file(kept, &None, &dst).unwrap();
    let bad = job(
        tmp.path(),
        "b",
        broken.to_str().unwrap(),
        vae.to_str().unwrap(),
        "",
    );
    let o = fidshard(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = one_error_line(&o);
    assert!(
        line.contains("broken/diffusion_pytorch_model.safetensors")
            && line.contains("missing key `transformer_blocks.1.attn1.to_v.weight`"),
        "{line}"
    );
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn hub_command(hub: &MockHub, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = hub_mock::fidshard_on(hub, dir, args);
    cmd.env("FIDSHARD_LOG", "warn");
    cmd
}

/// Files under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    tree_files(dir)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_diffusers_pipeline_repo_is_fetched_by_its_id() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = MockHub::start();
    let t = fixture("diffusers-dit/transformer");
    let v = fixture("golden/vae");
    hub.add_repo(
        "acme/tiny-dit-pipe",
        &[
            (
                "model_index.json",
                b"{\"_class_name\": \"DiTPipeline\"}".to_vec(),
            ),
            ("scheduler/scheduler_config.json", b"{}".to_vec()),
            ("transformer/config.json", read(&t.join("config.json"))),
            (
                "transformer/diffusion_pytorch_model.safetensors",
                read(&t.join("diffusion_pytorch_model.safetensors")),
            ),
            (
                "transformer/diffusion_pytorch_model.bin",
                b"not wanted".to_vec(),
            ),
            ("vae/config.json", read(&v.join("config.json"))),
            (
                "vae/diffusion_pytorch_model.safetensors",
                read(&v.join("diffusion_pytorch_model.safetensors")),
            ),
        ],
        None,
    );
    let cfg = job(
        tmp.path(),
        "h",
        "acme/tiny-dit-pipe",
        "acme/tiny-dit-pipe",
        "",
    );
    let cfg = cfg.to_str().unwrap();
    // Before the download, `plan` says what is missing and that the architecture is read later.
    let o = hub_command(&hub, tmp.path(), &["plan", cfg])
        .output()
        .unwrap();
    let plan = ok(&o);
    assert!(plan.contains("acme/tiny-dit-pipe"), "{plan}");
    ok(&hub_command(&hub, tmp.path(), &["fetch", cfg])
        .output()
        .unwrap());
    let snapshot = tmp
        .path()
        .join("hub/models--acme--tiny-dit-pipe/snapshots")
        .join(COMMIT);
    assert_eq!(
        files_under(&snapshot),
        [
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ]
    );
    // Then offline: the cache is enough.
    let o = hub_command(&hub, tmp.path(), &["validate", cfg])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(out.contains("depth 2, hidden 32, patch 2"), "{out}");
    // `model: REPO` alone names both models of the pipeline, as from_pretrained does.
    let short = tmp.path().join("short.yaml");
    let text = std::fs::read_to_string(cfg).unwrap().replace(
        "model:\n  checkpoint: acme/tiny-dit-pipe\nvae: acme/tiny-dit-pipe\n",
        "model: acme/tiny-dit-pipe\n",
    );
    assert!(!text.contains("vae:"), "{text}");
    std::fs::write(&short, text).unwrap();
    let o = hub_command(&hub, tmp.path(), &["validate", short.to_str().unwrap()])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(ok(&o).contains("depth 2, hidden 32, patch 2"));
}
