//! TorchScript modules against the native models they were exported from (fixtures/torchscript,
//! traced from the published DiT and REPA code and diffusers): the same outputs within float32
//! rounding, guidance through the same `forward_with_cfg`, and the one-line load errors.
use crate::support::{fixture, rel_l2};
use fidshard_core::{CfgChannels, DiTConfig, ModelFamily, ScriptVae};
use fidshard_worker::backbone::{Backbone, LatentDecoder};
use fidshard_worker::checkpoint::load_state_dict;
use fidshard_worker::dit::DiT;
use fidshard_worker::torchscript::{ScriptDecoder, ScriptModel};
use fidshard_worker::vae::AutoencoderKlDecoder;
use tch::{Device, Kind, Tensor};

fn digits_config() -> DiTConfig {
    DiTConfig::from_json_file(&fixture("demo-digits/dit/config.json")).unwrap()
}

fn inputs(t: Tensor) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::randn([4, 4, 8, 8], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[1i64, 7, 10, 10]);
    (x, t, y)
}

#[test]
fn the_dit_export_and_its_guidance_match_the_native_dit() {
    let _rng = crate::support::global_rng();
    let _g = tch::no_grad_guard();
    let cfg = digits_config();
    let sd = load_state_dict(&fixture("demo-digits/dit/model.pt")).unwrap();
    let native = Backbone::from(DiT::from_state_dict(&cfg, sd).unwrap());
    let script = ScriptModel::load(
        &fixture("torchscript/dit.ts"),
        &cfg,
        ModelFamily::Dit,
        Device::Cpu,
    )
    .map(Backbone::Script)
    .unwrap();
    let (x, t, y) = inputs(Tensor::from_slice(&[999i64, 500, 999, 500]));
    let err = rel_l2(&script.forward(&x, &t, &y), &native.forward(&x, &t, &y));
    assert!(err < 1e-5, "forward: {err:e}");
    for channels in [CfgChannels::First(3), CfgChannels::All] {
        let a = script.forward_with_cfg(&x, &t, &y, 4.0, channels);
        let b = native.forward_with_cfg(&x, &t, &y, 4.0, channels);
        assert_eq!(a.size(), vec![4, 8, 8, 8]);
        let err = rel_l2(&a, &b);
        assert!(err < 1e-5, "forward_with_cfg {channels:?}: {err:e}");
    }
}

#[test]
fn the_sit_export_gives_the_native_velocity() {
    let _rng = crate::support::global_rng();
    let _g = tch::no_grad_guard();
    let (cfg, qk_norm) =
        fidshard_core::flow::sit_config_from_json_file(&fixture("demo-digits-sit/sit/config.json"))
            .unwrap();
    let sd = load_state_dict(&fixture("demo-digits-sit/sit/model.safetensors")).unwrap();
    let native = Backbone::from(fidshard_worker::sit::from_state_dict(&cfg, qk_norm, sd).unwrap());
    let script = Backbone::Script(
        ScriptModel::load(
            &fixture("torchscript/sit.ts"),
            &cfg,
            ModelFamily::Sit,
            Device::Cpu,
        )
        .unwrap(),
    );
    let (x, t, y) = inputs(Tensor::from_slice(&[1.0f32, 0.7, 0.25, 0.04]));
    let v = |m: &Backbone| fidshard_worker::sit::velocity(m, &x, &t, &y);
    let err = rel_l2(&v(&script), &v(&native));
    assert!(err < 1e-5, "velocity: {err:e}");
}

#[test]
fn the_decoder_export_matches_the_diffusers_decoder() {
    let _rng = crate::support::global_rng();
    let _g = tch::no_grad_guard();
    let native = LatentDecoder::from(
        AutoencoderKlDecoder::load(&fixture("demo-digits/vae"), Device::Cpu).unwrap(),
    );
    let shape = ScriptVae {
        downsample: 2,
        latent_channels: 4,
    };
    let script = LatentDecoder::Script(
        ScriptDecoder::load(
            &fixture("torchscript/vae-decoder.ts"),
            shape,
            8,
            Device::Cpu,
        )
        .unwrap(),
    );
    assert_eq!(script.upsample_factor(), native.upsample_factor());
    assert_eq!(script.latent_channels(), native.latent_channels());
    assert_eq!(script.scaling_factor(), None);
    let z = Tensor::randn([3, 4, 8, 8], (Kind::Float, Device::Cpu));
    let (a, b) = (
        script.decode_micro_batched(&z, 1),
        native.decode_micro_batched(&z, 1),
    );
    assert_eq!(a.size(), vec![3, 3, 16, 16]);
    let err = rel_l2(&a, &b);
    assert!(err < 1e-5, "decode: {err:e}");
}

#[test]
fn wrong_files_fail_at_load_naming_the_file_and_key() {
    let cfg = digits_config();
    let err = |r: Result<ScriptModel, fidshard_worker::EngineError>| {
        let e = r.err().expect("an error");
        assert!(e.is_input_error(), "{e}");
        e.to_string()
    };
    let load = |file: &str, family| ScriptModel::load(&fixture(file), &cfg, family, Device::Cpu);
    let e = err(load("torchscript/not-torchscript.pt", ModelFamily::Dit));
    assert!(
        e.contains("not-torchscript.pt: `model.torchscript`: not a TorchScript archive")
            && e.contains("torch.jit.save")
            && !e.contains('\n'),
        "{e}"
    );
    // The SiT has 4 output channels; the DiT config says learn_sigma (8).
    let e = err(load("torchscript/sit.ts", ModelFamily::Dit));
    assert!(
        e.contains("sit.ts: `model.torchscript`: returned [1, 4, 8, 8] for input [1, 4, 8, 8]; expected (N, 2 * in_channels = 8, H, W)"),
        "{e}"
    );
    // A decoder is no model: forward(x, t, y) does not run.
    let e = err(load("torchscript/vae-decoder.ts", ModelFamily::Sit));
    assert!(e.contains("forward(x, t, y) failed"), "{e}");
    let shape = ScriptVae {
        downsample: 4,
        latent_channels: 4,
    };
    let e = ScriptDecoder::load(
        &fixture("torchscript/vae-decoder.ts"),
        shape,
        8,
        Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("`vae.torchscript`: returned [1, 3, 16, 16] for latents [1, 4, 8, 8]; expected (N, 3, 32, 32)"),
        "{e}"
    );
}
