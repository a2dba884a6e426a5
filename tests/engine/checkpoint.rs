//! Checkpoint loading: `torch.save` zip files (read without Python) against safetensors files
//! holding the same tensors, `module.` prefixes, state dict wrappers, and the one-line errors a
//! user sees for files that are not usable state dicts.
//!
//! Fixtures: `tests/fixtures/golden/dit/` (the golden DiT weights) and `tests/fixtures/bad/`
//! (small files made once by `tests/fixtures/bad/make_fixtures.py`).
use crate::support::{fixture, read_safetensors};
use fidshard_worker::checkpoint::{load_safetensors, load_state_dict};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn load(path: &Path) -> BTreeMap<String, Tensor> {
    match load_state_dict(path) {
        Ok(sd) => sd.into_inner(),
        Err(e) => panic!("{e}"),
    }
}

/// The error loading `path` gives; checks it is one line that names the file.
fn load_err(path: &Path) -> String {
    let msg = match load_state_dict(path) {
        Ok(_) => panic!("{}: loaded, expected an error", path.display()),
        Err(e) => e.to_string(),
    };
    eprintln!("{msg}");
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "does not name the file: {msg}"
    );
    msg
}

/// Asserts both maps have the same keys and bitwise-equal tensors of the same dtype and shape.
fn assert_same(what: &str, got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>) {
    let (gk, wk): (Vec<_>, Vec<_>) = (got.keys().collect(), want.keys().collect());
    assert_eq!(gk, wk, "{what}: key sets differ");
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.kind(), w.kind(), "{what}: `{k}` dtype");
        assert_eq!(g.size(), w.size(), "{what}: `{k}` shape");
        assert!(g.is_contiguous(), "{what}: `{k}` is not contiguous");
        assert!(g.equal(w), "{what}: `{k}` values differ");
    }
}

/// Copies the zip `src` to `dst` entry by entry (stored), letting `edit` change or drop each.
fn rewrite_zip(src: &Path, dst: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let mut r = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..r.len() {
        let mut entry = r.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf).unwrap();
        if let Some(bytes) = edit(&name, buf) {
            w.start_file(name, opts).unwrap();
            w.write_all(&bytes).unwrap();
        }
    }
    w.finish().unwrap();
}

fn temp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn golden_pt_train_checkpoint_and_safetensors_agree() {
    let want = load(&fixture("golden/dit/model.safetensors"));
    assert!(!want.is_empty());
    let also = read_safetensors("golden/dit/model.safetensors");
    assert_same("safetensors via libtorch", &want, &also);
    assert_same("model.pt", &load(&fixture("golden/dit/model.pt")), &want);
    // {"model", "ema", "opt", "args": argparse.Namespace}: its "ema" weights.
    assert_same(
        "train-checkpoint.pt",
        &load(&fixture("golden/dit/train-checkpoint.pt")),
        &want,
    );
}

#[test]
fn dtypes_views_and_shared_storages_load_bitwise() {
    let got = load(&fixture("bad/dtypes.pt"));
    let mut want = load_safetensors(&fixture("bad/dtypes.safetensors")).unwrap();
    // float8 has no safetensors dtype in this stack: its expected value is its raw bytes.
    let mut got = got;
    let f8 = got.remove("f8").unwrap();
    assert_eq!(f8.kind(), Kind::Float8e4m3fn);
    assert!(
        f8.view_dtype(Kind::Uint8).equal(&want["f8"]),
        "f8 bytes differ"
    );
    want.remove("f8");
    assert_same("dtypes.pt", &got, &want);
    for (k, kind) in [
        ("half", Kind::Half),
        ("bf16", Kind::BFloat16),
        ("long", Kind::Int64),
        ("bool", Kind::Bool),
    ] {
        assert_eq!(got[k].kind(), kind, "`{k}`");
    }
    assert_eq!(got["view"].size(), [3, 3]);
    assert_eq!(got["scalar"].size(), Vec::<i64>::new());
    assert_eq!(got["long"].int64_value(&[4]), 1 << 62);
    // `shared_a = s[0]` and `shared_b = s[1:]` view one storage, read once.
    let a = got["shared_a"].data_ptr() as usize;
    let b = got["shared_b"].data_ptr() as usize;
    assert_eq!(
        b,
        a + 5 * 4,
        "shared_a and shared_b do not share their storage"
    );
}

#[test]
fn module_prefix_is_stripped() {
    let want = read_safetensors("bad/small.safetensors");
    let got = load(&fixture("bad/module-prefix.pt"));
    assert_same("module-prefix.pt", &got, &want);
}

#[test]
fn state_dict_wrapper_at_pickle_protocol_4() {
    // {"state_dict": ..., "epoch": 3, "args": argparse.Namespace}, STACK_GLOBAL/MEMOIZE/FRAME.
    let want = read_safetensors("bad/small.safetensors");
    assert_same("wrapped.pt", &load(&fixture("bad/wrapped.pt")), &want);
}

#[test]
fn truncated_pt_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("golden/dit/model.pt")).unwrap();
    let path = temp_path(&dir, "model.pt");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(&path);
    assert!(
        msg.contains("truncated or not a complete PyTorch checkpoint"),
        "{msg}"
    );
    let path = temp_path(&dir, "tiny.pt");
    std::fs::write(&path, &bytes[..3]).unwrap();
    assert!(load_err(&path).contains("too short"));
}

#[test]
fn files_without_a_state_dict_are_reported() {
    for (name, cause) in [
        ("not-a-state-dict.pt", "top-level object is a list"),
        ("dict-of-ints.pt", "key `a` holds an int (1), not a tensor"),
        (
            "whole-module.pt",
            "a `torch.nn.modules.linear.Linear` object",
        ),
    ] {
        let msg = load_err(&fixture(&format!("bad/{name}")));
        assert!(msg.contains("holds no state dict"), "{msg}");
        assert!(msg.contains(cause), "{msg}");
        assert!(msg.contains("torch.save(model.state_dict())"), "{msg}");
    }
}

#[test]
fn legacy_non_zip_pt_is_reported() {
    let msg = load_err(&fixture("bad/legacy.pt"));
    assert!(msg.contains("legacy"), "{msg}");
    assert!(msg.contains("torch>=1.6"), "{msg}");
    assert!(msg.contains("torch.save("), "{msg}");
}

#[test]
fn unsupported_dtype_is_reported() {
    let msg = load_err(&fixture("bad/uint16.pt"));
    assert!(msg.contains("unsupported dtype torch.uint16"), "{msg}");
    assert!(msg.contains("`w`"), "{msg}");
}

#[test]
fn missing_storage_entry_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("golden/dit/model.pt");
    // A faithful copy (entries no longer 64-byte aligned) still loads.
    let copy = temp_path(&dir, "copy.pt");
    rewrite_zip(&src, &copy, |_, b| Some(b));
    assert_same("copy.pt", &load(&copy), &load(&src));

    let path = temp_path(&dir, "incomplete.pt");
    rewrite_zip(&src, &path, |name, b| (name != "model/data/3").then_some(b));
    let msg = load_err(&path);
    assert!(
        msg.contains("missing storage entry `model/data/3`"),
        "{msg}"
    );
    assert!(msg.contains("t_embedder.mlp.0.weight"), "{msg}");

    let path = temp_path(&dir, "short-storage.pt");
    rewrite_zip(&src, &path, |name, b| {
        Some(if name == "model/data/3" {
            b[..100].to_vec()
        } else {
            b
        })
    });
    let msg = load_err(&path);
    assert!(msg.contains("`model/data/3` holds 100 bytes"), "{msg}");
}

#[test]
fn big_endian_and_broken_pickles_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("golden/dit/model.pt");
    let path = temp_path(&dir, "big.pt");
    rewrite_zip(&src, &path, |name, b| {
        Some(if name == "model/byteorder" {
            b"big".to_vec()
        } else {
            b
        })
    });
    assert!(load_err(&path).contains("only little-endian"));

    let path = temp_path(&dir, "cut-pickle.pt");
    rewrite_zip(&src, &path, |name, b| {
        Some(if name == "model/data.pkl" {
            b[..b.len() / 2].to_vec()
        } else {
            b
        })
    });
    let msg = load_err(&path);
    assert!(msg.contains("data.pkl"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");

    let path = temp_path(&dir, "no-pickle.pt");
    rewrite_zip(&src, &path, |name, b| {
        (name != "model/data.pkl").then_some(b)
    });
    assert!(load_err(&path).contains("without `*/data.pkl`"));
}
