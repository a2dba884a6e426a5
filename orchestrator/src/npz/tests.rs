//! Tests of the npz assembly. numpy is the judge of the format: the checks that run it use
//! `<repo>/.venv/bin/python` (`make env` installs it with numpy); without it they skip that
//! part with a message, except in CI (`CI=true`), where they fail rather than pass unchecked.
//! `FIDSHARD_BIG_TESTS=1` adds a >4 GiB (zip64) round trip; the `#[ignore]`d `npz_bench` and
//! `bench_generate_pngs` are run by scripts/bench-assemble.sh.
use super::source::{ordered_load, SampleError};
use super::verify::{read_npy_header, NpyInfo};
use super::writer::npy_header;
use super::*;
use fidshard_core::output::{encode_png, png_name, write_atomic};
use std::io::Read;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

const SIDE: u32 = 8;

/// Known pixels of sample `i` (all 256 byte values occur across samples).
fn pixels(i: u64, side: u32) -> Vec<u8> {
    (0..side as u64 * side as u64 * 3)
        .map(|k| ((k * 31 + i * 97 + k / 3 * i) % 256) as u8)
        .collect()
}

/// Writes `n` PNGs into `root/samples` as the worker does; returns the folder and the CRC32 of
/// each file.
fn write_job(root: &Path, n: u64, side: u32) -> (PathBuf, Vec<u32>) {
    let dir = root.join("samples");
    std::fs::create_dir_all(&dir).unwrap();
    let crcs = (0..n)
        .map(|i| {
            let png = encode_png(&pixels(i, side), side).unwrap();
            write_atomic(&dir.join(png_name(i, n)), &png).unwrap();
            crc32fast::hash(&png)
        })
        .collect();
    (dir, crcs)
}

fn labels(n: u64) -> Vec<i64> {
    (0..n as i64).map(|i| (i * 7919) % 1000).collect()
}

/// The venv's python if it can import numpy. Without it: `None` after a "skipped" message
/// naming `test`, or a failure in CI (`CI=true`), which must never skip the numpy checks.
fn numpy_python(test: &str) -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let works = Command::new(&py)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(py);
    }
    let why = format!("{} cannot import numpy", py.display());
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!in_ci, "{test}: {why} (CI must install it: `make env`)");
    eprintln!("{test}: numpy part skipped: {why}; run `make env`");
    None
}

/// Runs a Python snippet with `args` as sys.argv[1:] in `python`; it must print "ok".
fn run_numpy(python: &Path, script: &str, args: &[&str]) {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "numpy check failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Temporary npz files left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

fn input<'a>(
    dir: &'a Path,
    n: u64,
    labels: &'a [i64],
    crc: Option<&'a [u32]>,
) -> AssembleInput<'a> {
    AssembleInput {
        samples_dir: dir,
        num_samples: n,
        image_size: SIDE,
        labels,
        expected_crc: crc,
    }
}

#[test]
fn npy_headers_are_format_1_0_and_64_byte_aligned() {
    let h = npy_header::<u8>(&[5, 8, 8, 3]).unwrap();
    assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
    assert_eq!(h.len() % 64, 0);
    let text = String::from_utf8_lossy(&h[10..]);
    assert!(text.contains("'descr': '|u1'") && text.contains("'fortran_order': False"));
    let info = read_npy_header(&h[..]).unwrap();
    assert_eq!(
        info,
        NpyInfo {
            version: (1, 0),
            descr: "|u1".into(),
            fortran_order: false,
            shape: vec![5, 8, 8, 3],
            data_offset: h.len() as u64
        }
    );
    let l = read_npy_header(&npy_header::<i64>(&[50_000]).unwrap()[..]).unwrap();
    assert_eq!(
        (l.descr.as_str(), l.shape, l.data_offset % 64),
        ("<i8", vec![50_000], 0)
    );
}

#[test]
fn small_job_round_trips_through_rust_and_numpy() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 5;
    let (dir, crcs) = write_job(tmp.path(), n, SIDE);
    let labels = labels(n);
    let out = tmp.path().join("samples.npz");
    let report = assemble_with_threads(&input(&dir, n, &labels, Some(&crcs)), &out, 3).unwrap();
    assert_eq!(report.bytes, std::fs::metadata(&out).unwrap().len());
    verify_npz(&out, n, SIDE).unwrap();
    assert!(leftovers(tmp.path()).is_empty());

    // Rust: the raw entries.
    let expected: Vec<u8> = (0..n).flat_map(|i| pixels(i, SIDE)).collect();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    let names: Vec<String> = (0..zip.len())
        .map(|i| zip.name_for_index(i).unwrap().to_string())
        .collect();
    assert_eq!(names, ["arr_0.npy", "arr_1.npy"]);
    let mut entry = zip.by_name("arr_0.npy").unwrap();
    assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
    let info = read_npy_header(&mut entry).unwrap();
    assert_eq!(info.shape, [n, SIDE as u64, SIDE as u64, 3]);
    let mut data = Vec::new();
    entry.read_to_end(&mut data).unwrap();
    assert_eq!(data, expected);
    drop(entry);
    let mut raw = Vec::new();
    zip.by_name("arr_1.npy")
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let npy = npyz::NpyFile::new(&raw[..]).unwrap();
    assert_eq!(npy.into_vec::<i64>().unwrap(), labels);

    // numpy: what the ADM evaluator does (np.load(path)['arr_0']), and the format version.
    let Some(python) = numpy_python("small_job_round_trips_through_rust_and_numpy") else {
        return;
    };
    let expected_path = tmp.path().join("expected.u8");
    std::fs::write(&expected_path, &expected).unwrap();
    let labels_arg = labels
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    run_numpy(
        &python,
        r#"
import sys, zipfile, numpy as np
path, expected, labels, n, side = sys.argv[1:6]
n, side = int(n), int(side)
z = np.load(path)
a, l = z['arr_0'], z['arr_1']
assert a.shape == (n, side, side, 3) and a.dtype == np.uint8 and a.flags.c_contiguous, (a.shape, a.dtype)
assert (a == np.fromfile(expected, np.uint8).reshape(n, side, side, 3)).all()
assert l.dtype == np.int64 and l.tolist() == [int(x) for x in labels.split(',')], l
with zipfile.ZipFile(path) as zf:
    assert [i.filename for i in zf.infolist()] == ['arr_0.npy', 'arr_1.npy']
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    for name in ['arr_0.npy', 'arr_1.npy']:
        with zf.open(name) as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            np.lib.format.read_array_header_1_0(f)
            assert f.tell() % 64 == 0, f.tell()
print('ok')
"#,
        &[
            out.to_str().unwrap(),
            expected_path.to_str().unwrap(),
            &labels_arg,
            &n.to_string(),
            &SIDE.to_string(),
        ],
    );
}

/// Runs `assemble` expecting an error, and checks that the existing npz is untouched and no
/// temporary file is left.
fn assemble_fails(root: &Path, input: &AssembleInput) -> AssembleError {
    let out = root.join("samples.npz");
    std::fs::write(&out, b"the previous npz").unwrap();
    let err = assemble_with_threads(input, &out, 2).unwrap_err();
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous npz");
    assert!(leftovers(root).is_empty(), "{:?}", leftovers(root));
    assert!(!err.to_string().contains('\n'), "{err}");
    err
}

#[test]
fn missing_pngs_are_all_named() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 6;
    let (dir, _) = write_job(tmp.path(), n, SIDE);
    std::fs::remove_file(dir.join("000001.png")).unwrap();
    std::fs::remove_file(dir.join("000004.png")).unwrap();
    let labels = labels(n);
    let err = assemble_fails(tmp.path(), &input(&dir, n, &labels, None));
    assert!(
        matches!(&err, AssembleError::Missing { indices, .. } if indices == &[1, 4]),
        "{err}"
    );
    assert_eq!(err.bad_indices(), Some(&[1, 4][..]));
    assert!(err.to_string().contains("000001.png, 000004.png"), "{err}");
}

#[test]
fn truncated_garbage_and_wrong_size_pngs_are_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 7;
    let (dir, _) = write_job(tmp.path(), n, SIDE);
    let p2 = dir.join("000002.png");
    let bytes = std::fs::read(&p2).unwrap();
    std::fs::write(&p2, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.join("000003.png"), b"not a png").unwrap();
    let big = encode_png(&pixels(5, 2 * SIDE), 2 * SIDE).unwrap();
    std::fs::write(dir.join("000005.png"), big).unwrap();
    let labels = labels(n);
    let err = assemble_fails(tmp.path(), &input(&dir, n, &labels, None));
    let AssembleError::Corrupt { indices, first, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(indices, &[2, 3, 5]);
    assert!(first.contains("000002.png"), "{first}");
    let again = assemble_fails(tmp.path(), &input(&dir, n, &labels, None));
    assert_eq!(again.bad_indices(), Some(&[2, 3, 5][..]));
    // The wrong size is explained.
    std::fs::write(&p2, &bytes).unwrap();
    std::fs::copy(dir.join("000004.png"), dir.join("000003.png")).unwrap();
    let err = assemble_fails(tmp.path(), &input(&dir, n, &labels, None));
    assert!(
        err.to_string()
            .contains("000005.png: image is 16x16 Rgb8, expected 8x8 Rgb8"),
        "{err}"
    );
}

#[test]
fn crc_mismatches_are_corrupt_and_matching_crcs_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 4;
    let (dir, mut crcs) = write_job(tmp.path(), n, SIDE);
    let labels = labels(n);
    crcs[1] ^= 1;
    crcs[3] ^= 0x8000_0000;
    let err = assemble_fails(tmp.path(), &input(&dir, n, &labels, Some(&crcs)));
    let AssembleError::Corrupt { indices, first, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(indices, &[1, 3]);
    assert!(first.contains("000001.png: CRC32"), "{first}");
    crcs[1] ^= 1;
    crcs[3] ^= 0x8000_0000;
    let out = tmp.path().join("samples.npz");
    assemble(&input(&dir, n, &labels, Some(&crcs)), &out).unwrap();
    verify_npz(&out, n, SIDE).unwrap();
}

#[test]
fn inconsistent_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, crcs) = write_job(tmp.path(), 3, SIDE);
    let labels = labels(2);
    let err = assemble_fails(tmp.path(), &input(&dir, 3, &labels, None));
    assert!(matches!(err, AssembleError::Input(_)), "{err}");
    let labels = self::labels(3);
    let err = assemble_fails(tmp.path(), &input(&dir, 3, &labels, Some(&crcs[..2])));
    assert!(matches!(err, AssembleError::Input(_)), "{err}");
}

#[test]
fn io_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = write_job(tmp.path(), 2, SIDE);
    let labels = labels(2);
    let out = tmp.path().join("no/such/folder/samples.npz");
    let err = assemble(&input(&dir, 2, &labels, None), &out).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AssembleError::Io { .. }), "{msg}");
    assert!(
        msg.contains("no/such/folder") && !msg.contains('\n'),
        "{msg}"
    );
    let err = check_free_space(&tmp.path().join("samples.npz"), u64::MAX).unwrap_err();
    assert!(
        err.to_string().starts_with("not enough disk space for "),
        "{err}"
    );
}

#[test]
fn writer_checks_counts_and_cleans_up_unfinished_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("samples.npz");
    let mut w = NpzWriter::create(&out, 2, 4, 2).unwrap();
    assert!(matches!(
        w.push_image(&[0; 5]),
        Err(AssembleError::Input(_))
    ));
    w.push_image(&[1; 24]).unwrap();
    assert!(matches!(w.finish(&[0, 1]), Err(AssembleError::Input(_))));
    assert!(leftovers(tmp.path()).is_empty() && !out.exists());

    let mut w = NpzWriter::create(&out, 2, 4, 2).unwrap();
    w.push_image(&[1; 24]).unwrap();
    assert_eq!(leftovers(tmp.path()).len(), 1);
    drop(w);
    assert!(leftovers(tmp.path()).is_empty() && !out.exists());

    // Non-square images and an empty array are fine.
    let mut w = NpzWriter::create(&out, 2, 4, 2).unwrap();
    w.push_image(&[1; 24]).unwrap();
    w.push_image(&[2; 24]).unwrap();
    w.finish(&[3, 4]).unwrap();
    assert_eq!(verify::check(&out, 2, 4, 2).unwrap(), [3, 4]);
    let empty = tmp.path().join("empty.npz");
    NpzWriter::create(&empty, 0, 8, 8)
        .unwrap()
        .finish(&[])
        .unwrap();
    verify_npz(&empty, 0, 8).unwrap();
}

#[test]
fn verify_rejects_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("samples.npz");
    let mut w = NpzWriter::create(&out, 1, 8, 8).unwrap();
    w.push_image(&[7; 192]).unwrap();
    w.finish(&[0]).unwrap();
    verify_npz(&out, 1, 8).unwrap();
    for (n, side) in [(2, 8), (1, 4)] {
        let err = verify_npz(&out, n, side).unwrap_err();
        assert!(matches!(err, AssembleError::Invalid { .. }), "{err}");
    }
    std::fs::write(&out, b"PK junk").unwrap();
    assert!(matches!(
        verify_npz(&out, 1, 8),
        Err(AssembleError::Invalid { .. })
    ));
}

#[test]
fn ordered_load_keeps_order_and_bounds_the_look_ahead() {
    let consumed = AtomicU64::new(0);
    let loads = AtomicU64::new(0);
    let mut seen = Vec::new();
    ordered_load(
        300,
        4,
        3,
        |i, _| {
            // A load only starts within the window past what was consumed.
            assert!(i < consumed.load(Ordering::SeqCst) + 3, "{i}");
            loads.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_micros((i * 7919) % 300));
            if i == 17 {
                panic!("a hostile file");
            }
            Ok(vec![i as u8])
        },
        |i, r| {
            seen.push(i);
            consumed.store(i + 1, Ordering::SeqCst);
            assert_eq!(
                r.map_err(|e| (i, e)),
                if i == 17 {
                    Err((17, SampleError::Panicked))
                } else {
                    Ok(vec![i as u8])
                }
            );
            ControlFlow::Continue(())
        },
    );
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    assert_eq!(loads.load(Ordering::SeqCst), 300);

    // Stopping early returns at once and stops loading.
    let loads = AtomicU64::new(0);
    ordered_load(
        1_000_000,
        2,
        4,
        |_, _| {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        },
        |i, _| {
            if i == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    assert!(loads.load(Ordering::SeqCst) <= 11 + 4, "{loads:?}");
}

/// A write failing mid-file (a full disk) must give one line naming the npz, remove the
/// temporary file, leave the old npz alone and print nothing else. The failure is made real by
/// running `disk_full_child` in a child process limited to 4 MB files (RLIMIT_FSIZE, with
/// SIGXFSZ ignored so that the write returns EFBIG instead of killing it).
#[test]
fn a_failing_write_is_one_line_and_cleans_up() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "npz::tests::disk_full_child",
        "--exact",
        "--ignored",
        "--nocapture",
    ])
    .env("FIDSHARD_DISK_FULL_DIR", tmp.path());
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 20,
                rlim_max: 4 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("disk-full child ok"),
        "{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("ZipWriter"), "{stderr}");
}

#[test]
#[ignore]
fn disk_full_child() {
    let Ok(dir) = std::env::var("FIDSHARD_DISK_FULL_DIR") else {
        return;
    };
    let out = Path::new(&dir).join("samples.npz");
    std::fs::write(&out, b"the previous npz").unwrap();
    let mut w = NpzWriter::create(&out, 100, 256, 256).unwrap();
    let image = vec![9u8; w.image_bytes()];
    let err = (0..100)
        .find_map(|_| w.push_image(&image).err())
        .or_else(|| w.finish(&labels(100)).err())
        .expect("a 20 MB npz cannot be written under a 4 MB file size limit");
    let msg = err.to_string();
    assert!(matches!(err, AssembleError::Io { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!("writing {} (temporary file ", out.display()))
            && msg.contains("File too large")
            && !msg.contains('\n'),
        "{msg}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous npz");
    assert!(leftovers(Path::new(&dir)).is_empty());
    println!("disk-full child ok: {msg}");
}

/// A >4 GiB npz (zip64 sizes and offsets) read back by numpy. 22,000 synthetic 256^2 images
/// (4.3 GB) go straight through `NpzWriter`; numpy needs as much memory to load `arr_0`.
#[test]
fn zip64_npz_over_4_gib_loads_in_numpy() {
    if std::env::var("FIDSHARD_BIG_TESTS").as_deref() != Ok("1") {
        eprintln!("zip64_npz_over_4_gib_loads_in_numpy: skipped; set FIDSHARD_BIG_TESTS=1 (writes 4.3 GB)");
        return;
    }
    let started = std::time::Instant::now();
    let (n, side) = (22_000u64, 256u32);
    let bytes = side as usize * side as usize * 3;
    // Image i is bytes (k + 7 i) % 251: a slice of one table, so writing costs no compute.
    let table: Vec<u8> = (0..bytes + 251).map(|k| (k % 251) as u8).collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("samples.npz");
    let mut w = NpzWriter::create(&out, n, side, side).unwrap();
    for i in 0..n {
        let o = (7 * i % 251) as usize;
        w.push_image(&table[o..o + bytes]).unwrap();
    }
    let size = w.finish(&labels(n)).unwrap();
    assert!(size > 1 << 32, "{size}");
    let written = started.elapsed().as_secs_f64();
    verify_npz(&out, n, side).unwrap();
    let Some(python) = numpy_python("zip64_npz_over_4_gib_loads_in_numpy") else {
        return;
    };
    run_numpy(
        &python,
        r#"
import sys, numpy as np
path, n, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
z = np.load(path)
a = z['arr_0']
assert a.shape == (n, side, side, 3) and a.dtype == np.uint8, a.shape
k = np.arange(side * side * 3).reshape(side, side, 3)
for i in [0, 1, 9999, 21845, n - 1]:
    assert (a[i] == (k + 7 * i) % 251).all(), i
l = z['arr_1']
assert l.shape == (n,) and l.dtype == np.int64 and l[12345] == (12345 * 7919) % 1000
print('ok')
"#,
        &[out.to_str().unwrap(), &n.to_string(), &side.to_string()],
    );
    eprintln!(
        "zip64 test: wrote {size} bytes in {written:.1} s; numpy check done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// scripts/bench-assemble.sh, step 1: `FIDSHARD_BENCH_N` (5000) PNGs of 256^2 in
/// `$FIDSHARD_BENCH_DIR/samples`, encoded as the worker does, with content that compresses like
/// real samples (smooth gradients plus noise). Existing files are kept.
#[test]
#[ignore]
fn bench_generate_pngs() {
    let root = PathBuf::from(std::env::var("FIDSHARD_BENCH_DIR").expect("FIDSHARD_BENCH_DIR"));
    let n = bench_n();
    let dir = root.join("samples");
    std::fs::create_dir_all(&dir).unwrap();
    let side = 256u32;
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..default_threads() {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let path = dir.join(png_name(i, n));
                if path.exists() {
                    continue;
                }
                let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut px = Vec::with_capacity(side as usize * side as usize * 3);
                for y in 0..side as i64 {
                    for x in 0..side as i64 {
                        for c in 0..3i64 {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            let t = x * (1 + c) + y * (2 + i as i64 % 5) + i as i64 * 13;
                            let smooth = ((t % 512) - 256).abs();
                            let noise = (state % 17) as i64 - 8;
                            px.push((smooth + noise).clamp(0, 255) as u8);
                        }
                    }
                }
                write_atomic(&path, &encode_png(&px, side).unwrap()).unwrap();
            });
        }
    });
}

fn bench_n() -> u64 {
    std::env::var("FIDSHARD_BENCH_N").map_or(5000, |v| v.parse().expect("FIDSHARD_BENCH_N"))
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// scripts/bench-assemble.sh, step 2: assembles `$FIDSHARD_BENCH_DIR/samples` into
/// `$FIDSHARD_BENCH_DIR/rust.npz` and prints wall time and peak RSS. Labels are `i % 1000`, as
/// in scripts/bench_assemble.py.
#[test]
#[ignore]
fn npz_bench() {
    let root = PathBuf::from(std::env::var("FIDSHARD_BENCH_DIR").expect("FIDSHARD_BENCH_DIR"));
    let n = bench_n();
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 1000).collect();
    let dir = root.join("samples");
    let input = AssembleInput {
        samples_dir: &dir,
        num_samples: n,
        image_size: 256,
        labels: &labels,
        expected_crc: None,
    };
    let threads = std::env::var("FIDSHARD_BENCH_THREADS").map_or(default_threads(), |v| {
        v.parse().expect("FIDSHARD_BENCH_THREADS")
    });
    let before = peak_rss_mib();
    let report = assemble_with_threads(&input, &root.join("rust.npz"), threads).unwrap();
    println!(
        "rust assemble: {n} images, {threads} decoder threads: {:.2} s wall, {:.0} MB, \
         peak RSS {:.1} MiB (test harness before: {before:.1} MiB)",
        report.seconds,
        report.bytes as f64 / 1e6,
        peak_rss_mib()
    );
}

/// A byte flipped inside the images (same size, headers intact) passes the cheap check but not
/// the full one; other labels than the recorded ones fail it too.
#[test]
fn full_verification_catches_flipped_image_bytes_and_other_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 6;
    let (dir, crcs) = write_job(tmp.path(), n, SIDE);
    let labels = labels(n);
    let out = tmp.path().join("samples.npz");
    assemble_with_threads(&input(&dir, n, &labels, Some(&crcs)), &out, 2).unwrap();
    verify_npz_full(&out, n, SIDE, &labels).unwrap();
    let mut other = labels.clone();
    other[3] += 1;
    let err = verify_npz_full(&out, n, SIDE, &other)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labels differ") && err.contains("index 3"),
        "{err}"
    );

    let mut bytes = std::fs::read(&out).unwrap();
    // Well inside arr_0's pixels: past the local header and the 128-byte npy header.
    let at = 30 + "arr_0.npy".len() + 128 + 2 * (SIDE * SIDE * 3) as usize + 5;
    bytes[at] ^= 0x5a;
    std::fs::write(&out, &bytes).unwrap();
    verify_npz(&out, n, SIDE).unwrap();
    let err = verify_npz_full(&out, n, SIDE, &labels)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("arr_0.npy") && err.contains("samples.npz"),
        "{err}"
    );
}

/// The full check compares each npz image with its PNG: an npz assembled from other PNGs (a
/// valid npz, consistent CRCs) is found, as is a PNG that is not the recorded one.
#[test]
fn check_against_pngs_finds_an_npz_of_other_pngs_and_a_replaced_png() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 5;
    let (dir, crcs) = write_job(tmp.path(), n, SIDE);
    let labels = labels(n);
    let out = tmp.path().join("samples.npz");
    assemble_with_threads(&input(&dir, n, &labels, Some(&crcs)), &out, 2).unwrap();
    assert!(check_against_pngs(&out, &dir, SIDE, &labels, &crcs).is_clean());

    // The npz of other pixels at index 2, with records and PNGs that agree with each other.
    let other = tmp.path().join("other");
    let (odir, ocrcs) = write_job(&other, n, SIDE);
    let p2 = odir.join(png_name(2, n));
    std::fs::copy(dir.join(png_name(3, n)), &p2).unwrap();
    let mut mixed = ocrcs.clone();
    mixed[2] = crcs[3];
    let onpz = other.join("samples.npz");
    assemble_with_threads(&input(&odir, n, &labels, Some(&mixed)), &onpz, 2).unwrap();
    std::fs::copy(&onpz, &out).unwrap();
    let found = check_against_pngs(&out, &dir, SIDE, &labels, &crcs);
    assert!(found.bad_pngs.is_empty(), "{found:?}");
    let why = found.npz.expect("the npz is not the PNGs'");
    assert!(
        why.contains("image 2 differs") && why.contains("000002.png"),
        "{why}"
    );

    // A valid PNG copied over another: its CRC contradicts the record.
    assemble_with_threads(&input(&dir, n, &labels, Some(&crcs)), &out, 2).unwrap();
    std::fs::copy(dir.join(png_name(1, n)), dir.join(png_name(4, n))).unwrap();
    let found = check_against_pngs(&out, &dir, SIDE, &labels, &crcs);
    assert_eq!(found.bad_pngs.len(), 1, "{found:?}");
    assert_eq!(found.bad_pngs[0].0, 4);
    assert!(found.bad_pngs[0].1.contains("CRC32"), "{found:?}");
}
