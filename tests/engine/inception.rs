//! Parity of the Inception-v3 feature extractor (worker/src/inception/) with torch-fidelity's
//! `FeatureExtractorInceptionV3` on random weights (tests/fixtures/inception/: make_fixtures.py
//! draws them from torch's generator; the same draws with tch give the same tensors, checked
//! by their CRC-32, so no 95 MB weights file is stored).
use crate::support::{fixture, global_rng, read_safetensors, rel_l2};
use fidshard_worker::inception::{InceptionFeatures, InceptionV3};
use fidshard_worker::params::StateDict;
use fidshard_worker::EngineError;
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The random state_dict of the fixtures, in its order, and the CRC-32 of its float tensors.
fn random_weights() -> (BTreeMap<String, Tensor>, u32) {
    let text = std::fs::read_to_string(fixture("inception/weights.json")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    let _rng = global_rng();
    tch::manual_seed(spec["seed"].as_i64().unwrap());
    let mut crc = crc32fast::Hasher::new();
    let mut weights = BTreeMap::new();
    for entry in spec["tensors"].as_array().unwrap() {
        let key = entry[0].as_str().unwrap();
        let shape: Vec<i64> = entry[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        // The worker's recipe (what `fidshard-worker random-inception` writes), which must
        // draw make_fixtures.py's tensors op for op.
        let t = fidshard_worker::inception::random::random_tensor(key, &shape)
            .unwrap_or_else(|| panic!("no recipe for {key}"));
        if t.kind() == Kind::Float {
            let values = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
            crc.update(
                &values
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            );
        }
        weights.insert(key.to_string(), t);
    }
    (weights, crc.finalize())
}

fn network() -> InceptionV3 {
    let (weights, crc) = random_weights();
    let golden = read_safetensors("inception/forward.safetensors");
    assert_eq!(
        i64::from(crc),
        golden["weights_crc32"].int64_value(&[0]),
        "tch drew other weights than torch"
    );
    InceptionV3::from_state_dict(StateDict::new("random", weights), Device::Cpu).unwrap()
}

fn errors(ours: &InceptionFeatures, golden: &BTreeMap<String, Tensor>, size: i64) -> [f64; 3] {
    [
        rel_l2(&ours.pool_3, &golden[&format!("pool_3_{size}")]),
        rel_l2(
            &ours.logits_unbiased,
            &golden[&format!("logits_unbiased_{size}")],
        ),
        rel_l2(&ours.spatial, &golden[&format!("spatial_{size}")]),
    ]
}

#[test]
fn forward_equals_torch_fidelity_feature_extractor() {
    let net = network();
    let golden = read_safetensors("inception/forward.safetensors");
    for size in [16, 64, 299] {
        let images = &golden[&format!("images_{size}")];
        assert_eq!(images.size()[1..], [size, size, 3]);
        // Per image (the CPU default) and the whole batch in one pass (as torch-fidelity ran).
        for micro_batch in [1, 0] {
            let ours = net.features(images, micro_batch).unwrap();
            assert_eq!(ours.spatial.size()[1], 17 * 17 * 7);
            let [pool, logits, spatial] = errors(&ours, &golden, size);
            println!("{size}x{size}, micro-batch {micro_batch}: rel L2 pool_3 {pool:.2e}, logits_unbiased {logits:.2e}, spatial {spatial:.2e}");
            for e in [pool, logits, spatial] {
                assert!(e < 1e-5, "{size}: rel L2 {e:.3e}");
            }
        }
    }
}

#[test]
fn features_of_an_image_do_not_depend_on_its_batch_with_micro_batch_1() {
    let net = network();
    let golden = read_safetensors("inception/forward.safetensors");
    let images = &golden["images_64"];
    let micro = net.features(images, 1).unwrap();
    let whole = net.features(images, 0).unwrap();
    for i in 0..2 {
        let alone = net.forward(&images.narrow(0, i, 1)).unwrap();
        assert!(micro.pool_3.narrow(0, i, 1).equal(&alone.pool_3));
        assert!(micro
            .logits_unbiased
            .narrow(0, i, 1)
            .equal(&alone.logits_unbiased));
        assert!(micro.spatial.narrow(0, i, 1).equal(&alone.spatial));
    }
    // A batch of 2 in one pass: libtorch's CPU convolutions may sum in another order.
    let diff = (&micro.pool_3 - &whole.pool_3)
        .abs()
        .max()
        .double_value(&[]);
    println!("pool_3, batch of 2 vs one image at a time: max abs difference {diff:.3e}");
    assert!(rel_l2(&micro.pool_3, &whole.pool_3) < 1e-5);
    // The time of one image at 256 x 256 (the DiT's resolution), on this machine's CPU.
    let img =
        (Tensor::rand([1, 256, 256, 3], (Kind::Float, Device::Cpu)) * 255.0).to_kind(Kind::Uint8);
    let start = Instant::now();
    let f = net.forward(&img).unwrap();
    println!(
        "one 256x256 image on the CPU: {:.2} s ({} threads)",
        start.elapsed().as_secs_f64(),
        tch::get_num_threads()
    );
    assert_eq!(f.pool_3.size(), [1, 2048]);
    assert_eq!(f.logits_unbiased.size(), [1, 1008]);
}

#[test]
fn loads_from_a_file_and_names_a_missing_key() {
    let (mut weights, _) = random_weights();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inception.safetensors");
    let named: Vec<(&str, &Tensor)> = weights.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&named, &path).unwrap();
    let from_file = InceptionV3::load(&path, Device::Cpu).unwrap();
    let golden = read_safetensors("inception/forward.safetensors");
    let ours = from_file.features(&golden["images_16"], 1).unwrap();
    let [pool, logits, spatial] = errors(&ours, &golden, 16);
    assert!(
        pool < 1e-5 && logits < 1e-5 && spatial < 1e-5,
        "{pool} {logits} {spatial}"
    );
    weights.remove("Mixed_6d.branch1x1.bn.running_var");
    let err = InceptionV3::from_state_dict(StateDict::new("cut", weights), Device::Cpu)
        .err()
        .unwrap();
    assert!(
        matches!(&err, EngineError::MissingKey { key, .. } if key == "Mixed_6d.branch1x1.bn.running_var"),
        "{err}"
    );
    // NCHW or float input is refused, not misread.
    let nchw = Tensor::zeros([1, 3, 16, 16], (Kind::Uint8, Device::Cpu));
    assert!(from_file.forward(&nchw).is_err());
}
