//! Diffusers-format DiT checkpoints (`tests/fixtures/diffusers-dit/`, made by its
//! make_fixtures.py): a random `DiTTransformer2DModel` saved by diffusers, loaded through the
//! worker's mapping, gives the forward of the published DiT code on the same weights.
use crate::support::{fixture, read_safetensors, rel_l2};
use fidshard_worker::checkpoint::diffusers_dit::{load, sincos_pos_embed, to_published};
use fidshard_worker::checkpoint::load_state_dict;
use fidshard_worker::dit::{CfgChannels, DiT, DiTConfig};
use fidshard_worker::params::StateDict;
use std::path::PathBuf;

fn folder() -> PathBuf {
    fixture("diffusers-dit/transformer")
}

fn config() -> DiTConfig {
    fidshard_core::diffusers_dit::config_from_file(&folder().join("config.json")).unwrap()
}

fn weights() -> PathBuf {
    folder().join("diffusion_pytorch_model.safetensors")
}

#[test]
fn diffusers_dit_forward_matches_the_published_dit() {
    let _guard = tch::no_grad_guard();
    let cfg = config();
    // The folder and its weights file (config.json beside it) are both diffusers DiTs.
    for path in [folder(), weights()] {
        let sd = load(&path, &cfg).unwrap().expect("a diffusers DiT");
        let model = DiT::from_state_dict(&cfg, sd).unwrap();
        let g = read_safetensors("diffusers-dit/forward.safetensors");
        let out = model.forward(&g["x"], &g["t"], &g["y"]);
        let err = rel_l2(&out, &g["out"]);
        assert!(err < 1e-5, "{}: forward rel L2 {err:e}", path.display());
        let scale = g["cfg_scale"].double_value(&[0]);
        let cfg_out = model.forward_with_cfg(
            &g["cfg_x"],
            &g["cfg_t"],
            &g["cfg_y"],
            scale,
            CfgChannels::First(3),
        );
        let err = rel_l2(&cfg_out, &g["cfg_out"]);
        assert!(
            err < 1e-5,
            "{}: forward_with_cfg rel L2 {err:e}",
            path.display()
        );
    }
    // A plain state_dict is left to the ordinary loader.
    let golden = DiTConfig::from_json_file(&fixture("golden/dit/config.json")).unwrap();
    assert!(load(&fixture("golden/dit/model.safetensors"), &golden)
        .unwrap()
        .is_none());
}

#[test]
fn computed_pos_embed_is_the_published_buffer() {
    let cfg = DiTConfig::from_json_file(&fixture("golden/dit/config.json")).unwrap();
    let sd = load_state_dict(&fixture("golden/dit/model.safetensors")).unwrap();
    let stored = sd.get("pos_embed").unwrap();
    let computed = sincos_pos_embed(cfg.hidden_size, cfg.input_size / cfg.patch_size);
    assert_eq!(computed.size(), stored.size());
    let err = rel_l2(&computed, stored);
    assert!(err < 1e-7, "pos_embed rel L2 {err:e}");
}

/// The diffusers tensors of the fixture, with `edit` applied.
fn edited(edit: impl FnOnce(&mut std::collections::BTreeMap<String, tch::Tensor>)) -> StateDict {
    let mut t = load_state_dict(&weights()).unwrap().into_inner();
    edit(&mut t);
    StateDict::new(weights(), t)
}

#[test]
fn diffusers_dit_errors_name_the_file_and_the_key() {
    let cfg = config();
    let err = |sd| match to_published(sd, &cfg) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let file = weights().display().to_string();
    let e = err(edited(|t| {
        t.remove("transformer_blocks.1.attn1.to_k.bias");
    }));
    assert!(
        e.starts_with(&file) && e.contains("missing key `transformer_blocks.1.attn1.to_k.bias`"),
        "{e}"
    );
    let e = err(edited(|t| {
        t.insert(
            "transformer_blocks.0.norm3.weight".into(),
            tch::Tensor::ones([32], (tch::Kind::Float, tch::Device::Cpu)),
        );
    }));
    assert!(
        e.starts_with(&file) && e.contains("transformer_blocks.0.norm3.weight"),
        "{e}"
    );
    let e = err(edited(|t| {
        let k = "transformer_blocks.1.norm1.emb.timestep_embedder.linear_2.bias";
        let v = t[k].shallow_clone() + 1.0;
        t.insert(k.into(), v);
    }));
    assert!(e.contains("differs from block 0's"), "{e}");
}
