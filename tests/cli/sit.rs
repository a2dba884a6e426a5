//! The SiT family through the real binary: `fidshard run` of the golden jobs of
//! `fixtures/demo-digits-sit` (REPA's samplers) on two CPU workers with batch sizes other than
//! the reference's, and the keys a flow job refuses (exit 2, naming the key).
use crate::support::*;
use std::path::{Path, PathBuf};

/// A job YAML in `dir` equivalent to golden SiT job `name`, with `extra` lines.
pub(crate) fn sit_job(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(fixture(&format!("demo-digits-sit/jobs/{name}/job.json"))).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut y = format!(
        "model:\n  family: sit\n  config: {}\n  checkpoint: {}\nvae: {}\n",
        fixture("demo-digits-sit/sit/config.json").display(),
        fixture("demo-digits-sit/sit/model.safetensors").display(),
        fixture("demo-digits/vae").display(),
    );
    y += &format!(
        "num_classes: 10\nlabels: balanced\nnum_samples: {}\nseed: {}\nsampler: {}\nsteps: {}\ncfg_scale: {}\n",
        j["num_samples"], j["seed"], j["sampler"].as_str().unwrap(), j["steps"], j["cfg_scale"]
    );
    if j["heun"] == true {
        y += "solver: heun\n";
    }
    if let Some(p) = j.get("path_type").and_then(|p| p.as_str()) {
        y += &format!("path_type: {p}\n");
    }
    if let Some(low) = j.get("guidance_low") {
        y += &format!("guidance_interval: [{low}, {}]\n", j["guidance_high"]);
    }
    y += "out_dir: out\n";
    y += extra;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, y).unwrap();
    path
}

fn run_golden(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = sit_job(
        tmp.path(),
        name,
        "devices: {cpu: 2}\nshard_size: 5\nbatch_size: 3\n",
    );
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (shape, got) = read_npz_u8(&tmp.path().join("out/samples.npz"));
    let (want_shape, want) = read_npz_u8(&fixture(&format!(
        "demo-digits-sit/jobs/{name}/expected.npz"
    )));
    assert_eq!(shape, want_shape);
    assert_images_close(name, &got, &want);
}

#[test]
fn run_reproduces_repa_ode_heun_with_a_guidance_interval() {
    run_golden("ode-heun-cfg4-interval");
}

#[test]
fn run_reproduces_repa_sde_on_the_cosine_path() {
    run_golden("sde-cosine-cfg3-bigseed");
}

#[test]
fn keys_of_the_other_family_are_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (extra, key) in [
        ("beta_schedule: linear\n", "`beta_schedule`"),
        ("eta: 0.5\n", "`eta`"),
        ("variance: fixed_small\n", "`variance`"),
        ("path_type: cosine\n", "`path_type`"),
    ] {
        let cfg = sit_job(tmp.path(), "ode-euler-cfg1-steps12", extra);
        let o = fidshard(&["config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{extra}: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{extra}: {}", stderr(&o));
    }
    // The resolved job of a flow job is itself a job file that loads.
    let cfg = sit_job(tmp.path(), "sde-linear-cfg1.8-interval", "");
    let o = fidshard(&["config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let resolved = tmp.path().join("resolved.yaml");
    std::fs::write(&resolved, &o.stdout).unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("family: sit") && text.contains("pixels: repa"),
        "{text}"
    );
    let o = fidshard(&["config", resolved.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// The `model FLOPs ... GFLOP/image (N steps...)` part of bench's report.
fn flops_line(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.contains("model FLOPs"))
        .unwrap_or_else(|| panic!("no FLOPs line in {text}"));
    line.split(", DiT at").next().unwrap().to_string()
}

#[test]
fn bench_runs_sit_presets_and_jobs_and_counts_their_flops() {
    let random = |preset: &str| {
        let o = fidshard(&[
            "bench",
            "--random-model",
            preset,
            "--image-size",
            "64",
            "--steps",
            "3",
            "--images",
            "1",
            "--batch-size",
            "1",
        ]);
        assert_eq!(o.status.code(), Some(0), "{preset}: {}", stderr(&o));
        flops_line(&o.stdout)
    };
    // The same transformer: 3 SDE steps with guidance cost what 3 DDPM steps with guidance do.
    let sit = random("SiT-S/8");
    assert!(sit.contains("(3 steps, x2 for guidance)"), "{sit}");
    assert_eq!(sit, random("DiT-S/8"));

    let tmp = tempfile::tempdir().unwrap();
    let cfg = sit_job(tmp.path(), "ode-heun-cfg4-interval", "devices: {cpu: 1}\n");
    let o = fidshard(&["bench", cfg.to_str().unwrap(), "--images", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The job's time at the measured rate, and its device-hours.
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("this job")
            && l.contains("samples take")
            && l.ends_with("CPU worker-hours)")),
        "{text}"
    );
    // Heun's 10 steps evaluate the model 19 times.
    assert!(
        flops_line(&o.stdout).contains("(19 steps"),
        "{}",
        flops_line(&o.stdout)
    );
    // SiT's heun2 on 8 grid points: 7 steps of two evaluations; its SDE on 25 points: 24 steps
    // and the last step.
    for (name, want) in [
        ("ode-heun2-cfg4", "(14 steps"),
        ("sde-sigma-cfg4", "(25 steps"),
    ] {
        let cfg = sit_transport_job(tmp.path(), name, "devices: {cpu: 1}\n");
        let o = fidshard(&["bench", cfg.to_str().unwrap(), "--images", "1"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(
            flops_line(&o.stdout).contains(want),
            "{name}: {}",
            flops_line(&o.stdout)
        );
    }
}

/// configs/repa-sit-xl-2-256.yaml and configs/sit-xl-2-256.yaml load (their weights need not be
/// local for `config`) with the papers' recipes.
#[test]
fn the_sit_config_loads_with_the_papers_recipe() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/sit-xl-2-256.yaml");
    let o = fidshard(&["config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "preset: SiT-XL/2",
        "sampler: sit-sde",
        "cfg_scale: 1.5",
        "cfg_channels: 3",
        "diffusion_form: sigma",
        "last_step: mean",
        "last_step_size: 0.04",
        "pixels: dit",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
}

#[test]
fn the_repa_config_loads_with_the_papers_recipe() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/repa-sit-xl-2-256.yaml");
    let o = fidshard(&["config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "family: sit",
        "preset: SiT-XL/2",
        "sampler: sde",
        "cfg_scale: 1.8",
        "- 0.7",
        "pixels: repa",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
}

/// A job YAML in `dir` equivalent to SiT-transport golden job `name`
/// (`fixtures/sit-transport`, made with willisma/SiT's samplers), with `extra` lines.
fn sit_transport_job(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(fixture(&format!("sit-transport/jobs/{name}/job.json"))).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut y = format!(
        "model:\n  family: sit\n  config: {}\n  checkpoint: {}\nvae: {}\n",
        fixture("demo-digits-sit/sit/config.json").display(),
        fixture("demo-digits-sit/sit/model.safetensors").display(),
        fixture("demo-digits/vae").display(),
    );
    let ode = j["mode"] == "ODE";
    y += &format!(
        "num_classes: 10\nlabels: balanced\nnum_samples: {}\nseed: {}\nsampler: {}\nsteps: {}\ncfg_scale: {}\n",
        j["num_samples"],
        j["seed"],
        if ode { "sit-ode" } else { "sit-sde" },
        j["steps"],
        j["cfg"]
    );
    if j["method"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .starts_with("heun")
    {
        y += "solver: heun\n";
    }
    if !ode {
        y += &format!(
            "diffusion_form: {}\ndiffusion_norm: {}\n",
            j["diffusion_form"].as_str().unwrap(),
            j["diffusion_norm"]
        );
        match j["last_step"].as_str() {
            Some(last) => {
                y += &format!(
                    "last_step: {last}\nlast_step_size: {}\n",
                    j["last_step_size"]
                )
            }
            None => y += "last_step: none\n",
        }
    }
    y += "out_dir: out\n";
    y += extra;
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, y).unwrap();
    path
}

fn run_sit_golden(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = sit_transport_job(
        tmp.path(),
        name,
        "devices: {cpu: 2}\nshard_size: 5\nbatch_size: 2\n",
    );
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (shape, got) = read_npz_u8(&tmp.path().join("out/samples.npz"));
    let (want_shape, want) =
        read_npz_u8(&fixture(&format!("sit-transport/jobs/{name}/expected.npz")));
    assert_eq!(shape, want_shape);
    assert_images_close(name, &got, &want);
    // The resolved job records SiT's settings and loads again.
    let resolved = tmp.path().join("out/job.resolved.yaml");
    let o = fidshard(&["config", resolved.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn run_reproduces_sits_ode_heun2_with_guidance() {
    run_sit_golden("ode-heun2-cfg4");
}

#[test]
fn run_reproduces_sits_sde_with_a_tweedie_last_step() {
    run_sit_golden("sde-decreasing-tweedie-cfg1.5");
}

#[test]
fn sits_sbdm_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = sit_transport_job(tmp.path(), "sde-sigma-cfg4", "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("diffusion_form: sigma", "diffusion_form: SBDM");
    std::fs::write(&cfg, text).unwrap();
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("diffusion_form")
            && err.contains("infinite at t = 0")
            && err.lines().count() == 1,
        "{err}"
    );
    assert!(!tmp.path().join("out").exists(), "nothing is created");
}
