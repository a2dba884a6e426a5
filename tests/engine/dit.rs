//! DiT parity with the PyTorch reference (`golden/dit/forward.safetensors`) and with the real
//! architectures' parameter manifests.
use crate::support::{fixture, read_safetensors, rel_l2};
use fidshard_worker::checkpoint::load_state_dict;
use fidshard_worker::dit::{CfgChannels, DiT, DiTConfig, PRESETS};
use fidshard_worker::params::ShapeRecorder;
use std::collections::BTreeMap;

fn golden_config() -> DiTConfig {
    DiTConfig::from_json_file(&fixture("golden/dit/config.json")).unwrap()
}

fn check_forward(weights: &str) {
    let _guard = tch::no_grad_guard();
    let sd = load_state_dict(&fixture(weights)).unwrap();
    let model = DiT::from_state_dict(&golden_config(), sd).unwrap();
    let g = read_safetensors("golden/dit/forward.safetensors");
    let out = model.forward(&g["x"], &g["t"], &g["y"]);
    let err = rel_l2(&out, &g["out"]);
    assert!(err < 1e-5, "{weights}: forward rel L2 {err:e}");

    let scale = g["cfg_scale"].double_value(&[0]);
    let cfg = model.forward_with_cfg(
        &g["cfg_x"],
        &g["cfg_t"],
        &g["cfg_y"],
        scale,
        CfgChannels::First(3),
    );
    let err = rel_l2(&cfg, &g["cfg_out"]);
    assert!(err < 1e-5, "{weights}: forward_with_cfg rel L2 {err:e}");
    // Guiding all channels must change the 4th latent channel and only the latent channels.
    let all = model.forward_with_cfg(
        &g["cfg_x"],
        &g["cfg_t"],
        &g["cfg_y"],
        scale,
        CfgChannels::All,
    );
    assert!(rel_l2(&all.narrow(1, 0, 3), &g["cfg_out"].narrow(1, 0, 3)) < 1e-5);
    assert!(rel_l2(&all.narrow(1, 3, 1), &g["cfg_out"].narrow(1, 3, 1)) > 1e-3);
    assert!(rel_l2(&all.narrow(1, 4, 4), &g["cfg_out"].narrow(1, 4, 4)) < 1e-5);
}

#[test]
fn forward_matches_pytorch_from_pt() {
    check_forward("golden/dit/model.pt");
}

#[test]
fn forward_matches_pytorch_from_safetensors() {
    check_forward("golden/dit/model.safetensors");
}

#[test]
fn forward_matches_pytorch_from_train_checkpoint() {
    check_forward("golden/dit/train-checkpoint.pt");
}

fn manifest(name: &str) -> BTreeMap<String, Vec<i64>> {
    let text = std::fs::read_to_string(fixture(&format!("golden/manifests/{name}"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn recorded(cfg: &DiTConfig) -> BTreeMap<String, Vec<i64>> {
    let mut rec = ShapeRecorder::default();
    DiT::build(cfg, &mut rec).unwrap();
    rec.shapes
}

#[test]
fn presets_have_the_real_checkpoints_names_and_shapes() {
    for (file, preset, latent) in [
        ("DiT-XL-2-256.json", "DiT-XL/2", 32),
        ("DiT-XL-2-512.json", "DiT-XL/2", 64),
        ("DiT-B-4-256.json", "DiT-B/4", 32),
        ("DiT-S-8-256.json", "DiT-S/8", 32),
    ] {
        let cfg = DiTConfig::preset(preset, latent, 1000).unwrap();
        assert_eq!(recorded(&cfg), manifest(file), "{file}");
    }
}

#[test]
fn all_twelve_presets_build() {
    assert_eq!(PRESETS.len(), 12);
    for name in PRESETS {
        let cfg = DiTConfig::preset(name, 32, 1000).unwrap_or_else(|| panic!("{name}"));
        let shapes = recorded(&cfg);
        let depth = shapes
            .keys()
            .filter(|k| k.ends_with("attn.qkv.weight"))
            .count() as i64;
        assert_eq!(depth, cfg.depth, "{name}");
        // The spelling of the public checkpoint file names is accepted too.
        assert_eq!(
            DiTConfig::preset(&name.replace('/', "-"), 32, 1000),
            Some(cfg)
        );
    }
    assert!(DiTConfig::preset("DiT-M/2", 32, 1000).is_none());
    assert!(DiTConfig::preset("DiT-XL/3", 32, 1000).is_none());
}

#[test]
fn learn_sigma_false_and_other_class_counts() {
    let mut cfg = golden_config();
    cfg.learn_sigma = false;
    cfg.num_classes = 7;
    let shapes = recorded(&cfg);
    assert_eq!(shapes["y_embedder.embedding_table.weight"], vec![8, 64]);
    assert_eq!(shapes["final_layer.linear.weight"], vec![2 * 2 * 4, 64]);
    let mut rec = ShapeRecorder::default();
    let model = DiT::build(&cfg, &mut rec).unwrap();
    let _g = tch::no_grad_guard();
    let x = tch::Tensor::zeros([2, 4, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
    let t = tch::Tensor::from_slice(&[3i64, 999]);
    let y = tch::Tensor::from_slice(&[0i64, 7]);
    // Uninitialised weights give garbage values, but the shape must follow learn_sigma.
    assert_eq!(model.forward(&x, &t, &y).size(), vec![2, 4, 8, 8]);
}

#[test]
fn num_classes_disagreeing_with_the_checkpoint_says_which_value_fits() {
    let mut cfg = golden_config();
    cfg.num_classes = 1000;
    let sd = load_state_dict(&fixture("golden/dit/model.safetensors")).unwrap();
    let err = DiT::from_state_dict(&cfg, sd)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("y_embedder.embedding_table.weight"), "{err}");
    assert!(err.contains("num_classes: 10"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn wrong_architecture_names_the_key_and_both_shapes() {
    let mut cfg = golden_config();
    cfg.hidden_size = 128;
    let sd = load_state_dict(&fixture("golden/dit/model.safetensors")).unwrap();
    let err = DiT::from_state_dict(&cfg, sd)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("x_embedder.proj.weight")
            && err.contains("[64, 4, 2, 2]")
            && err.contains("[128, 4, 2, 2]"),
        "{err}"
    );

    let mut cfg = golden_config();
    cfg.depth = 1;
    let sd = load_state_dict(&fixture("golden/dit/model.safetensors")).unwrap();
    let err = DiT::from_state_dict(&cfg, sd)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("unexpected key") && err.contains("blocks.1."),
        "{err}"
    );

    let mut cfg = golden_config();
    cfg.depth = 3;
    let sd = load_state_dict(&fixture("golden/dit/model.safetensors")).unwrap();
    let err = DiT::from_state_dict(&cfg, sd)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("missing key `blocks.2."), "{err}");
}

/// The C++ precision shim links and flips libtorch's TF32 flag; CPU sampling ignores autocast
/// (bf16 on a CPU device is exactly fp32).
#[test]
fn precision_modes() {
    use fidshard_worker::precision::{autocast, configure, tf32_enabled};
    use fidshard_worker::Precision;
    configure(Precision::Tf32);
    assert!(tf32_enabled());
    configure(Precision::Fp32);
    assert!(!tf32_enabled());

    let _guard = tch::no_grad_guard();
    let sd = load_state_dict(&fixture("golden/dit/model.safetensors")).unwrap();
    let model = DiT::from_state_dict(&golden_config(), sd).unwrap();
    let g = read_safetensors("golden/dit/forward.safetensors");
    let fp32 = model.forward(&g["x"], &g["t"], &g["y"]);
    let bf16 = autocast(tch::Device::Cpu, Precision::Bf16, || {
        model.forward(&g["x"], &g["t"], &g["y"])
    });
    assert_eq!(bf16.kind(), tch::Kind::Float);
    assert!(fp32.equal(&bf16));
}
