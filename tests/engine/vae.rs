//! Parity and loading tests of the AutoencoderKL decoder against diffusers (golden data in
//! tests/fixtures/golden: `vae/`, `vae-legacy-names/`, `manifests/sd-vae-ft-ema*.json`).
use crate::support::{fixture, read_safetensors, rel_l2};
use fidshard_worker::params::{ParamSource, ShapeRecorder, StateDict};
use fidshard_worker::vae::{
    current_attention_key, is_encoder_key, prepare_decoder_state_dict, AutoencoderKlDecoder,
    VaeConfig,
};
use fidshard_worker::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

fn decode_golden(folder: &str) -> f64 {
    let vae =
        AutoencoderKlDecoder::load(&fixture(folder), Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let golden = read_safetensors("golden/vae/decode.safetensors");
    let out = vae.decode(&golden["latents"]);
    let err = rel_l2(&out, &golden["decoded"]);
    println!("{folder}: decode rel L2 = {err:.3e}");
    err
}

#[test]
fn decode_matches_diffusers() {
    let err = decode_golden("golden/vae");
    assert!(err < 1e-5, "rel L2 {err:.3e} >= 1e-5");
}

#[test]
fn decode_matches_diffusers_with_legacy_attention_names() {
    let err = decode_golden("golden/vae-legacy-names");
    assert!(err < 1e-5, "rel L2 {err:.3e} >= 1e-5");
}

#[test]
fn micro_batched_decode_equals_full_batch() {
    let vae = AutoencoderKlDecoder::load(&fixture("golden/vae"), Device::Cpu).unwrap();
    let golden = read_safetensors("golden/vae/decode.safetensors");
    let z = &golden["latents"];
    let full = vae.decode(z);
    let micro = vae.decode_micro_batched(z, 1);
    assert_eq!(micro.size(), full.size());
    // Each chunk is exactly the decode of that sample alone, in order.
    for i in 0..2 {
        assert!(micro.narrow(0, i, 1).equal(&vae.decode(&z.narrow(0, i, 1))));
    }
    // Against the batch-2 decode the values differ in the last bits only: oneDNN (and cuDNN)
    // choose conv algorithms by batch size, which changes the summation order (PyTorch itself
    // shows ~2e-6 per conv between batch 1 and 2 on CPU). So the bound is the parity bound of
    // the golden test, not bitwise equality.
    let max_abs = (&micro - &full).abs().max().double_value(&[]);
    let err = rel_l2(&micro, &full);
    println!("micro-batch 1 vs full batch: rel L2 = {err:.3e}, max abs = {max_abs:.3e}");
    assert!(err < 1e-5, "{err:.3e}");
    assert!(micro.allclose(&full, 1e-5, 1e-4, false));
    assert!(rel_l2(&micro, &golden["decoded"]) < 1e-5);
    // A micro-batch as large as the batch (or <= 0) is one plain decode.
    assert!(vae.decode_micro_batched(z, 0).equal(&full));
    assert!(vae.decode_micro_batched(z, 2).equal(&full));
    assert!(vae.decode_micro_batched(z, 64).equal(&full));
    // An uneven split: 3 samples in chunks of 2.
    let z3 = Tensor::cat(&[z, &z.narrow(0, 0, 1)], 0);
    let out3 = vae.decode_micro_batched(&z3, 2);
    assert!(out3.narrow(0, 0, 2).equal(&full));
    assert!(out3.narrow(0, 2, 1).equal(&vae.decode(&z.narrow(0, 0, 1))));
}

#[test]
fn golden_model_accessors() {
    let vae = AutoencoderKlDecoder::load(&fixture("golden/vae"), Device::Cpu).unwrap();
    assert_eq!(vae.upsample_factor(), 8);
    assert_eq!(vae.latent_channels(), 4);
    assert_eq!(vae.scaling_factor(), 0.18215);
    assert_eq!(vae.config().block_out_channels, vec![8, 16, 16, 32]);
    let out = vae.decode(&Tensor::zeros([0, 4, 8, 8], (Kind::Float, Device::Cpu)));
    assert_eq!(out.size(), vec![0, 3, 64, 64]);
}

// ---------------------------------------------------------------------------------------------
// The real architecture (sd-vae-ft-ema) against its manifests, in both naming schemes.

fn real_config() -> VaeConfig {
    VaeConfig::from_file(fixture("golden/manifests/sd-vae-ft-ema.config.json")).unwrap()
}

fn manifest(name: &str) -> BTreeMap<String, Vec<i64>> {
    let path = fixture(&format!("golden/manifests/{name}"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn decoder_side(m: &BTreeMap<String, Vec<i64>>) -> BTreeMap<String, Vec<i64>> {
    m.iter()
        .filter(|(k, _)| k.starts_with("decoder.") || k.starts_with("post_quant_conv."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn recorded_real_shapes() -> BTreeMap<String, Vec<i64>> {
    let mut rec = ShapeRecorder::default();
    AutoencoderKlDecoder::build(&real_config(), &mut rec).unwrap();
    rec.shapes
}

#[test]
fn real_config_values() {
    let cfg = real_config();
    // The hub config has no scaling_factor / use_post_quant_conv: diffusers' defaults apply.
    assert_eq!(cfg.scaling_factor, 0.18215);
    assert!(cfg.use_post_quant_conv && cfg.mid_block_add_attention);
    assert_eq!(cfg.upsample_factor(), 8);
    assert_eq!(cfg.latent_channels, 4);
    assert_eq!(cfg.sample_size, 256);
    let mut three = cfg.clone();
    three.block_out_channels = vec![128, 256, 512];
    three.up_block_types.truncate(3);
    assert_eq!(three.upsample_factor(), 4);
}

#[test]
fn real_config_matches_manifest_current_names() {
    let expected = decoder_side(&manifest("sd-vae-ft-ema.json"));
    assert_eq!(expected.len(), 140);
    assert_eq!(recorded_real_shapes(), expected);
}

#[test]
fn real_config_matches_manifest_legacy_names() {
    let legacy = decoder_side(&manifest("sd-vae-ft-ema.legacy-names.json"));
    let mut renamed = 0;
    let mapped: BTreeMap<String, Vec<i64>> = legacy
        .into_iter()
        .map(|(k, v)| match current_attention_key(&k) {
            Some(c) => {
                renamed += 1;
                (c, v)
            }
            None => (k, v),
        })
        .collect();
    assert_eq!(renamed, 8, "query/key/value/proj_attn weight+bias");
    assert_eq!(recorded_real_shapes(), mapped);
}

/// The full loader path (encoder keys skipped, legacy names renamed, build, `finish`) on a state
/// dict with every name and shape of the real file; the tensors are never touched.
fn load_from_manifest(name: &str) -> Result<()> {
    let tensors: BTreeMap<String, Tensor> = manifest(name)
        .into_iter()
        .map(|(k, shape)| (k, Tensor::empty(shape, (Kind::Float, Device::Cpu))))
        .collect();
    let mut sd = prepare_decoder_state_dict(StateDict::new(name, tensors), Device::Cpu)?;
    let vae = AutoencoderKlDecoder::build(&real_config(), &mut sd)?;
    sd.finish()?;
    assert_eq!(vae.upsample_factor(), 8);
    Ok(())
}

#[test]
fn real_files_of_both_naming_schemes_load() {
    load_from_manifest("sd-vae-ft-ema.json").unwrap();
    load_from_manifest("sd-vae-ft-ema.legacy-names.json").unwrap();
}

/// Random parameters, to run a decoder of any config.
struct RandomParams;

impl ParamSource for RandomParams {
    fn take(&mut self, _name: &str, shape: &[i64]) -> Result<Tensor> {
        Ok(Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.05)
    }
    fn contains(&self, _name: &str) -> bool {
        false
    }
}

#[test]
fn upsample_factor_follows_the_number_of_blocks() {
    let _rng = crate::support::global_rng();
    tch::manual_seed(0);
    for (channels, factor) in [(vec![8, 16, 16], 4), (vec![8, 16], 2), (vec![8], 1)] {
        let cfg = VaeConfig {
            up_block_types: vec!["UpDecoderBlock2D".into(); channels.len()],
            block_out_channels: channels,
            norm_num_groups: 4,
            ..VaeConfig::default()
        };
        let vae = AutoencoderKlDecoder::build(&cfg, &mut RandomParams).unwrap();
        assert_eq!(vae.upsample_factor(), factor);
        let out = vae.decode(&Tensor::randn([2, 4, 5, 6], (Kind::Float, Device::Cpu)));
        assert_eq!(out.size(), vec![2, 3, 5 * factor, 6 * factor]);
    }
}

// ---------------------------------------------------------------------------------------------
// Config errors.

fn config_error(json: &str) -> String {
    match VaeConfig::from_json_str(json, Path::new("vae/config.json")) {
        Ok(c) => panic!("accepted {json}: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_defaults_and_unknown_keys() {
    let cfg = VaeConfig::from_json_str(
        r#"{"scaling_factor": null, "shift_factor": null, "some_future_key": [1, {"a": 2}],
            "latents_mean": null, "act_fn": "silu"}"#,
        Path::new("config.json"),
    )
    .unwrap();
    assert_eq!(cfg, VaeConfig::default());
    assert_eq!(cfg.scaling_factor, 0.18215);
    let cfg = VaeConfig::from_json_str(
        r#"{"scaling_factor": 0.13025, "shift_factor": 0.0, "act_fn": "swish"}"#,
        Path::new("c.json"),
    )
    .unwrap();
    assert_eq!(cfg.scaling_factor, 0.13025);
    assert_eq!(cfg.shift_factor, Some(0.0));
}

#[test]
fn config_rejects_unsupported_values() {
    let e = config_error(
        r#"{"block_out_channels": [8, 16], "up_block_types": ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]}"#,
    );
    assert!(
        e.contains("vae/config.json") && e.contains("`up_block_types`"),
        "{e}"
    );
    assert!(e.contains("AttnUpDecoderBlock2D"), "{e}");
    let e = config_error(r#"{"block_out_channels": [8, 16]}"#);
    assert!(e.contains("`up_block_types`"), "{e}");
    let e = config_error(r#"{"act_fn": "gelu"}"#);
    assert!(e.contains("`act_fn`") && e.contains("gelu"), "{e}");
    let e = config_error(r#"{"shift_factor": 0.1159}"#);
    assert!(e.contains("`shift_factor`"), "{e}");
    let e = config_error(r#"{"block_out_channels": [30], "norm_num_groups": 32}"#);
    assert!(e.contains("`norm_num_groups`"), "{e}");
    let e = config_error(r#"{"block_out_channels": []}"#);
    assert!(e.contains("`block_out_channels`"), "{e}");
    let e = config_error(r#"{"layers_per_block": "two"}"#);
    assert!(
        e.contains("`layers_per_block`") && e.contains("invalid type"),
        "{e}"
    );
    let e = config_error(r#"{"_class_name": "UNet2DConditionModel"}"#);
    assert!(e.contains("`_class_name`"), "{e}");
    let e = config_error("[1, 2]");
    assert!(e.contains("vae/config.json"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Folder and weight errors.

/// A temp copy of a fixture folder.
fn copy_fixture(rel: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(rel)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn load_error(folder: &Path) -> String {
    match AutoencoderKlDecoder::load(folder, Device::Cpu) {
        Ok(_) => panic!("{} loaded", folder.display()),
        Err(e) => {
            assert!(e.is_input_error(), "{e}");
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "not one line: {msg}");
            msg
        }
    }
}

/// Rewrites the fixture weights into `dir` after `edit`.
fn write_weights(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) -> PathBuf {
    let mut tensors = read_safetensors(&format!("golden/vae/{WEIGHTS}"));
    edit(&mut tensors);
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    let path = dir.join(WEIGHTS);
    Tensor::write_safetensors(&list, &path).unwrap();
    path
}

#[test]
fn folder_without_config_json_errors() {
    let dir = copy_fixture("golden/vae");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    assert!(e.contains("no config.json"), "{e}");
    assert!(e.contains("stabilityai/sd-vae-ft-ema"), "{e}");
}

#[test]
fn missing_folder_and_missing_weights_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-vae");
    let e = load_error(&missing);
    assert!(
        e.contains("no-such-vae") && e.contains("does not exist"),
        "{e}"
    );

    let dir = copy_fixture("golden/vae");
    std::fs::remove_file(dir.path().join(WEIGHTS)).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");

    // Without safetensors the .bin is read (here a broken one, so the error names it).
    std::fs::write(
        dir.path().join("diffusion_pytorch_model.bin"),
        b"not a checkpoint",
    )
    .unwrap();
    let e = load_error(dir.path());
    assert!(e.contains("diffusion_pytorch_model.bin"), "{e}");
}

#[test]
fn safetensors_is_preferred_over_bin() {
    let dir = copy_fixture("golden/vae");
    std::fs::write(
        dir.path().join("diffusion_pytorch_model.bin"),
        b"not a checkpoint",
    )
    .unwrap();
    AutoencoderKlDecoder::load(dir.path(), Device::Cpu).unwrap();
}

#[test]
fn wrong_shape_errors_naming_key_and_shapes() {
    let dir = copy_fixture("golden/vae");
    let path = write_weights(dir.path(), |t| {
        t.insert(
            "decoder.up_blocks.1.resnets.0.conv1.weight".into(),
            Tensor::zeros([16, 32, 1, 1], (Kind::Float, Device::Cpu)),
        );
    });
    let e = load_error(dir.path());
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(
        e.contains("decoder.up_blocks.1.resnets.0.conv1.weight"),
        "{e}"
    );
    assert!(
        e.contains("[16, 32, 1, 1]") && e.contains("[16, 32, 3, 3]"),
        "{e}"
    );
}

#[test]
fn missing_decoder_key_errors() {
    let dir = copy_fixture("golden/vae");
    write_weights(dir.path(), |t| {
        t.remove("decoder.conv_out.bias");
    });
    let e = load_error(dir.path());
    assert!(e.contains("missing key `decoder.conv_out.bias`"), "{e}");
}

#[test]
fn unexpected_decoder_key_errors_but_encoder_keys_are_skipped() {
    let dir = copy_fixture("golden/vae");
    let extra = |t: &mut BTreeMap<String, Tensor>, k: &str| {
        t.insert(k.into(), Tensor::zeros([3], (Kind::Float, Device::Cpu)));
    };
    write_weights(dir.path(), |t| {
        extra(t, "encoder.some_new_layer.weight");
        extra(t, "quant_conv.extra");
    });
    AutoencoderKlDecoder::load(dir.path(), Device::Cpu).unwrap();
    assert!(is_encoder_key("encoder.conv_in.weight") && !is_encoder_key("decoder.conv_in.weight"));

    write_weights(dir.path(), |t| {
        extra(t, "decoder.mid_block.attentions.1.to_q.weight")
    });
    let e = load_error(dir.path());
    assert!(e.contains("unexpected key"), "{e}");
    assert!(
        e.contains("decoder.mid_block.attentions.1.to_q.weight"),
        "{e}"
    );
}

#[test]
fn legacy_conv_shaped_attention_weights_load() {
    let dir = copy_fixture("golden/vae-legacy-names");
    let legacy = read_safetensors(&format!("golden/vae-legacy-names/{WEIGHTS}"));
    let list: Vec<(String, Tensor)> = legacy
        .into_iter()
        .map(|(k, t)| {
            let t = if k.ends_with("attentions.0.query.weight") {
                t.reshape([32, 32, 1, 1])
            } else {
                t
            };
            (k, t)
        })
        .collect();
    Tensor::write_safetensors(&list, dir.path().join(WEIGHTS)).unwrap();
    let vae = AutoencoderKlDecoder::load(dir.path(), Device::Cpu).unwrap();
    let golden = read_safetensors("golden/vae/decode.safetensors");
    let err = rel_l2(&vae.decode(&golden["latents"]), &golden["decoded"]);
    assert!(err < 1e-5, "{err:.3e}");
}

#[test]
fn mixed_naming_schemes_error() {
    let dir = copy_fixture("golden/vae");
    write_weights(dir.path(), |t| {
        let q = t["decoder.mid_block.attentions.0.to_q.weight"].copy();
        t.insert("decoder.mid_block.attentions.0.query.weight".into(), q);
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("query.weight") && e.contains("to_q.weight"),
        "{e}"
    );
}
