//! Property test of the `torch.save` reader on damaged files: thousands of checkpoints made
//! from the fixtures by (a) truncating them, (b) mutating, (c) truncating and (d) splicing
//! their `data.pkl` (re-zipped, so that the pickle VM and not the zip CRC check sees the
//! damage), (e) damaging their storage entries and (f) flipping bytes anywhere in the zip; then
//! hand-made hostile files (control characters in names, absurd views, deep nesting, quadratic
//! work), each with the error it must give. For every case `load_state_dict` must return
//! (never panic, take over a second or allocate absurdly) and every error must be one printable
//! line that names the file.
//!
//! Deterministic: each case has its own xorshift seed derived from its id. Knobs:
//! `PICKLE_FUZZ_ONLY=<substring>` runs only the cases whose id contains it (to reproduce one),
//! `PICKLE_FUZZ_SCALE=<n>` multiplies the number of random cases (longer local runs).
#[path = "engine/support/fixtures.rs"]
mod fixtures;

use fidshard_worker::checkpoint::load_state_dict;
use fixtures::fixture;
use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest one case may take (a huge allocation or a runaway loop shows up here).
const CASE_LIMIT: Duration = Duration::from_secs(1);
/// The most memory the whole run may have held at once (libtorch itself takes a few hundred MB).
const PEAK_RSS_LIMIT: u64 = 2 << 30;

/// Peak resident memory of this process in bytes, where the OS tells (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb << 10)
}

/// xorshift64*: small, fast and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that neighbouring seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// FNV-1a of a case id: its seed.
fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Opcodes with arguments (valid, absurd and truncated ones) that the splicer inserts.
const SNIPPETS: &[&[u8]] = &[
    b"(", b")", b"]", b"}", b"N", b"\x88", b"\x89", b".", b"0", b"1", b"2", b"a", b"e", b"s",
    b"u", b"t", b"l", b"d", b"o", b"b", b"R", b"Q", b"\x81", b"\x92", b"\x93", b"\x94", b"\x85",
    b"\x86", b"\x87", b"\x8f", b"\x90", b"\x91", b"K\x07", b"K\x00", b"M\xff\xff",
    b"J\xff\xff\xff\xff", b"J\x00\x00\x00\x80", b"J\xff\xff\xff\x7f",
    b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f", b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01",
    b"\x8a\xff", b"\x8b\xff\xff\xff\x7f", b"\x8b\x00\x00\x00\x80", b"\x8b\x02\x00\x00\x00\x01\x02",
    b"G\x7f\xf8\x00\x00\x00\x00\x00\x00", b"G\x3f\xf0\x00\x00\x00\x00\x00\x00",
    b"X\xff\xff\xff\xff", b"X\x03\x00\x00\x00abc", b"X\x02\x00\x00\x00\xff\xfe",
    b"\x8c\x05hello", b"\x8c\x07storage", b"\x8c\x01\x80", b"\x8c\xff",
    b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff", b"\x8d\x00\x00\x00\x00\x00\x00\x00\x80",
    b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00x", b"B\xff\xff\xff\xff", b"C\x02ab", b"C\xff",
    b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff", b"T\xff\xff\xff\xff", b"T\x01\x00\x00\x00a",
    b"U\x01a", b"q\x00", b"q\xff", b"r\xff\xff\xff\xff", b"h\x00", b"h\x01", b"h\xff",
    b"j\xff\xff\xff\xff", b"j\x00\x00\x00\x00", b"p0\n", b"p-1\n", b"g0\n",
    b"g99999999999\n", b"I1\n", b"I01\n", b"Iabc\n", b"I99999999999999999999\n", b"L123L\n",
    b"L99999999999999999999999\n", b"F1.5\n", b"Fnan\n", b"Fx\n",
    b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_tensor_v3\n",
    b"ctorch._utils\n_rebuild_parameter\n", b"ccollections\nOrderedDict\n",
    b"c_codecs\nencode\n", b"ctorch\nFloatStorage\n", b"ctorch\nfloat16\n", b"cbuiltins\nset\n",
    b"cbuiltins\ntuple\n", b"ctorch\nSize\n", b"ctorch._tensor\n_rebuild_from_type_v2\n",
    b"ccopyreg\n_reconstructor\n", b"ctorch\n", b"\x80\x02", b"\x80\x05", b"\x80\x06",
    b"\x95\x10\x00\x00\x00\x00\x00\x00\x00", b"\x95\xff", b"P0\n", b"S'a'\n", b"Vx\n",
    b"\x82\x01", b"\x96\x00\x00\x00\x00\x00\x00\x00\x00", b"\x97", b"\x98", b"\xff", b"\x00",
    b"i__main__\nX\n", b"(\x8c\x07storage\x8c\x05torch\x8c\x0cFloatStorage\x93\x8c\x010\x8c\x03cpuK\x04tQ",
    b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x03\x00\x00\x009999X\x03\x00\x00\x00cpuJ\xff\xff\xff\x7ftQ",
];

/// One fixture checkpoint, and its zip entries when it is a zip.
struct Fixture {
    name: String,
    bytes: Vec<u8>,
    entries: Option<Vec<(String, Vec<u8>)>>,
}

impl Fixture {
    fn load(rel: &str) -> Fixture {
        let path = fixture(rel);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let entries = zip::ZipArchive::new(Cursor::new(&bytes)).ok().map(|mut z| {
            (0..z.len())
                .map(|i| {
                    let mut e = z.by_index(i).unwrap();
                    let mut buf = Vec::new();
                    e.read_to_end(&mut buf).unwrap();
                    (e.name().to_string(), buf)
                })
                .collect()
        });
        Fixture {
            name: rel.rsplit('/').next().unwrap().to_string(),
            bytes,
            entries,
        }
    }
    fn entries(&self) -> &[(String, Vec<u8>)] {
        self.entries.as_deref().expect("a zip fixture")
    }
    fn pkl(&self) -> &[u8] {
        &self
            .entries()
            .iter()
            .find(|(n, _)| n.ends_with("/data.pkl"))
            .unwrap()
            .1
    }
    /// The fixture re-zipped (stored) with `data.pkl` replaced by `pkl`.
    fn with_pkl(&self, pkl: &[u8]) -> Vec<u8> {
        self.rezip(|name, b| {
            Some(if name.ends_with("/data.pkl") {
                pkl.to_vec()
            } else {
                b.to_vec()
            })
        })
    }
    /// The fixture re-zipped (stored), `edit` changing or dropping each entry.
    fn rezip(&self, mut edit: impl FnMut(&str, &[u8]) -> Option<Vec<u8>>) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in self.entries() {
            if let Some(b) = edit(name, bytes) {
                w.start_file(name.as_str(), opts).unwrap();
                w.write_all(&b).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }
}

/// Runs the cases and keeps what went wrong.
struct Runner {
    dir: tempfile::TempDir,
    only: Option<String>,
    cases: usize,
    loaded: usize,
    /// Error messages by their first words, to show what the cases exercised.
    kinds: BTreeMap<String, usize>,
    failures: Vec<String>,
    slowest: (Duration, String),
}

impl Runner {
    fn new() -> Runner {
        Runner {
            dir: tempfile::tempdir().unwrap(),
            only: std::env::var("PICKLE_FUZZ_ONLY").ok(),
            cases: 0,
            loaded: 0,
            kinds: BTreeMap::new(),
            failures: Vec::new(),
            slowest: (Duration::ZERO, String::new()),
        }
    }

    fn wanted(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|o| id.contains(o.as_str()))
    }

    /// Loads `bytes` as a checkpoint file; records a failure if it panics, takes too long, or
    /// gives an error that is not one short line naming the file. Returns the error, if any.
    fn check(&mut self, id: &str, bytes: &[u8]) -> Option<String> {
        let path: PathBuf = self.dir.path().join("case.pt");
        std::fs::write(&path, bytes).unwrap();
        self.cases += 1;
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| load_state_dict(&path)));
        let took = start.elapsed();
        if took > self.slowest.0 {
            self.slowest = (took, id.to_string());
        }
        if took > CASE_LIMIT {
            self.failures.push(format!("{id}: took {took:?}"));
        }
        match result {
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.failures.push(format!("{id}: panicked: {msg}"));
                None
            }
            Ok(Ok(_)) => {
                self.loaded += 1;
                None
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if msg
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
                {
                    self.failures
                        .push(format!("{id}: error is not one printable line: {msg:?}"));
                }
                if msg.len() > 4096 {
                    self.failures
                        .push(format!("{id}: error of {} bytes", msg.len()));
                }
                if !msg.starts_with(&format!("{}: ", path.display())) {
                    self.failures
                        .push(format!("{id}: error does not name the file: {msg}"));
                }
                *self.kinds.entry(error_kind(&msg)).or_default() += 1;
                Some(msg)
            }
        }
    }

    /// `check` on the crafted case `id`, which must load (`want` is `None`) or give an error
    /// that contains `want`.
    fn expect(&mut self, id: &str, want: Option<&str>, bytes: impl FnOnce() -> Vec<u8>) {
        if !self.wanted(id) {
            return;
        }
        let failures = self.failures.len();
        // `None`: it loaded (a panic is already a failure).
        let got = self.check(id, &bytes());
        if self.failures.len() > failures {
            return;
        }
        match (want, got) {
            (None, Some(e)) => self.failures.push(format!("{id}: expected to load: {e}")),
            (Some(w), None) => self.failures.push(format!("{id}: loaded, expected `{w}`")),
            (Some(w), Some(e)) if !e.contains(w) => {
                self.failures.push(format!("{id}: expected `{w}`: {e}"))
            }
            _ => {}
        }
    }

    /// `check` on the case `id` if it is wanted, `make` building it from the case's own rng.
    fn case(&mut self, id: String, make: impl FnOnce(&mut Rng) -> Vec<u8>) {
        if self.wanted(&id) {
            let bytes = make(&mut Rng::new(seed_of(&id)));
            self.check(&id, &bytes);
        }
    }
}

/// What an error message says, without its specifics (names, numbers, the opcode position),
/// to count which errors the cases reached.
fn error_kind(msg: &str) -> String {
    let rest = msg.split_once(": ").map_or(msg, |(_, r)| r);
    let rest = rest
        .strip_prefix("cannot unpickle ")
        .map_or(rest, |r| r.split_once(": ").map_or(r, |(_, r)| r));
    let mut out = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '`' => {
                quoted = !quoted;
                if quoted {
                    out.push_str("`..`");
                }
            }
            _ if quoted => {}
            '0'..='9' => {
                if !out.ends_with('N') {
                    out.push('N');
                }
            }
            _ => out.push(c),
        }
    }
    out.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
}

/// Up to `n` distinct offsets in `0..len`: all the first and last ones, the rest spread evenly
/// with a random jitter.
fn offsets(rng: &mut Rng, len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    let edge = (n / 8).min(64);
    let mut v: Vec<usize> = (0..edge).chain(len - edge..len).collect();
    let inner = n - 2 * edge;
    let step = (len - 2 * edge) / inner;
    for i in 0..inner {
        v.push(edge + i * step + rng.below(step.max(1)));
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// 1 to 4 point mutations of `pkl`: bit flips, random bytes, interesting bytes, and runs of
/// 0xff / 0x00 over length fields.
fn flip(rng: &mut Rng, pkl: &mut [u8]) {
    const INTERESTING: &[u8] = &[
        0x00, 0x01, 0x7f, 0x80, 0xff, b'.', b'(', b')', b't', b'R', b'Q', b'b', b'h', b'q', b'X',
        0x8c, 0x8d, 0x93, 0x94, 0x95, 0x85, 0x86, 0x87, b'K', b'M', b'J', b'}', b']', b's', b'u',
        b'e', b'a', b'0', b'2',
    ];
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(pkl.len());
        match rng.below(4) {
            0 => pkl[at] ^= 1 << rng.below(8),
            1 => pkl[at] = rng.next() as u8,
            2 => pkl[at] = *rng.pick(INTERESTING),
            _ => {
                let fill = *rng.pick(&[0x00, 0xff, 0x7f, 0x80]);
                let end = (at + 1 + rng.below(8)).min(pkl.len());
                pkl[at..end].fill(fill);
            }
        }
    }
}

/// One splice of `pkl`: an opcode snippet inserted or overwritten, a range deleted or
/// duplicated, or a range replaced by one of `donor` (another fixture's pickle).
fn splice(rng: &mut Rng, pkl: &[u8], donor: &[u8]) -> Vec<u8> {
    let mut out = pkl.to_vec();
    let at = rng.below(pkl.len() + 1);
    match rng.below(5) {
        0 => {
            let s = *rng.pick(SNIPPETS);
            out.splice(at..at, s.iter().copied());
        }
        1 => {
            let s = *rng.pick(SNIPPETS);
            let end = (at + s.len()).min(out.len());
            out.splice(at..end, s.iter().copied());
        }
        2 => {
            let end = (at + 1 + rng.below(24)).min(out.len());
            out.drain(at..end);
        }
        3 => {
            let from = rng.below(pkl.len());
            let end = (from + 1 + rng.below(64)).min(pkl.len());
            out.splice(at..at, pkl[from..end].iter().copied());
        }
        _ => {
            let from = rng.below(donor.len());
            let dend = (from + 1 + rng.below(64)).min(donor.len());
            let end = (at + rng.below(64)).min(out.len());
            out.splice(at..end, donor[from..dend].iter().copied());
        }
    }
    out
}

/// A damaged copy of `f`: one `data/<key>` (or `byteorder`, `version`) entry shortened,
/// emptied, grown, doubled, replaced by garbage or dropped.
fn damage_storage(rng: &mut Rng, f: &Fixture) -> Vec<u8> {
    let targets: Vec<&str> = f
        .entries()
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.contains("/data/") || n.ends_with("/byteorder") || n.ends_with("/version"))
        .collect();
    let target = rng.pick(&targets).to_string();
    let how = rng.below(7);
    let (r1, r2) = (rng.next(), rng.next());
    f.rezip(|name, b| {
        if name != target {
            return Some(b.to_vec());
        }
        let cut = |n: u64| (n % (b.len() as u64 + 1)) as usize;
        Some(match how {
            0 => b[..cut(r1)].to_vec(),
            1 => b[..b.len().saturating_sub(1 + (r1 % 8) as usize)].to_vec(),
            2 => Vec::new(),
            3 => {
                let mut v = b.to_vec();
                v.extend(std::iter::repeat_n(r1 as u8, 1 + (r2 % 64) as usize));
                v
            }
            4 => (0..b.len().min(64))
                .map(|i| (r1 >> (i % 8 * 8)) as u8)
                .collect(),
            5 => return None,
            _ => b.iter().chain(b).copied().collect(),
        })
    })
}

/// A hand-assembled pickle (protocol 2), for the crafted cases.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X")
            .op(&(s.len() as u32).to_le_bytes())
            .op(s.as_bytes())
    }
    fn int(&mut self, i: i64) -> &mut Self {
        self.op(b"\x8a\x08").op(&i.to_le_bytes())
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(b"c")
            .op(module.as_bytes())
            .op(b"\n")
            .op(name.as_bytes())
            .op(b"\n")
    }
    fn ints(&mut self, v: &[i64]) -> &mut Self {
        self.op(b"(");
        for &i in v {
            self.int(i);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(<storage `key` of `numel` floats>, offset, size, stride, False,
    /// OrderedDict())`.
    fn tensor(
        &mut self,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        self.op(b"(")
            .str("storage")
            .global("torch", "FloatStorage")
            .str(key)
            .str("cpu");
        self.int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(size)
            .ints(stride);
        self.op(b"\x89")
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    /// `{name: tensor}` then STOP.
    fn state_dict(name: &str, tensor: impl FnOnce(&mut Pickle)) -> Vec<u8> {
        let mut p = Pickle::default();
        p.op(b"\x80\x02}").str(name);
        tensor(&mut p);
        p.op(b"s.");
        p.0
    }
}

/// A `torch.save`-like zip holding `entries` under `archive/`.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        w.start_file(format!("archive/{name}"), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Hand-made hostile files: names with newlines and control characters in errors, views that
/// would allocate absurdly, nesting deep enough to overflow a recursive drop, and pickles whose
/// work grows quadratically in their size. Each must give the error it names.
fn crafted(run: &mut Runner) {
    let floats: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let one = |p: &mut Pickle| {
        p.tensor("0", 16, 0, &[4, 4], &[4, 1]);
    };
    let ok = Pickle::state_dict("w", one);
    run.expect("crafted/valid", None, || {
        zip_of(&[("data.pkl", &ok), ("data/0", &floats)])
    });

    // Strings from the file reach the error messages: escaped, not printed raw.
    let pkl = Pickle::state_dict("w", |p| {
        p.tensor("0\nnext line", 16, 0, &[16], &[1]);
    });
    run.expect(
        "crafted/key-with-newline",
        Some(r"missing storage entry `archive/data/0\nnext line`"),
        || zip_of(&[("data.pkl", &pkl)]),
    );
    let pkl = Pickle::state_dict("a\nb\r\x1b[31m\u{2028}", one);
    run.expect(
        "crafted/name-with-newline",
        Some(r"tensor `a\nb\r\u{1b}[31m\u{2028}` needs 64"),
        || zip_of(&[("data.pkl", &pkl), ("data/0", &floats[..8])]),
    );
    run.expect(
        "crafted/byteorder-with-newline",
        Some(r"saved on a `big\nendian`-endian machine"),
        || {
            zip_of(&[
                ("byteorder", b"big\nendian"),
                ("data.pkl", &ok),
                ("data/0", &floats),
            ])
        },
    );
    let pkl = Pickle::state_dict("w", |p| {
        p.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        p.op(b"(")
            .str("storage")
            .op(b"\x8c\x05torch\x8c\x04a\nb\x0c\x93");
        p.str("0")
            .str("cpu")
            .int(16)
            .op(b"tQ")
            .int(0)
            .ints(&[16])
            .ints(&[1]);
        p.op(b"\x89)tR");
    });
    run.expect(
        "crafted/storage-type-with-newline",
        Some(r"unsupported dtype torch.a\nb\u{c};"),
        || zip_of(&[("data.pkl", &pkl), ("data/0", &floats)]),
    );
    let pkl = b"\x80\x02\x8c\x03a\nb\x8c\x01c\x93)R.";
    run.expect(
        "crafted/class-with-newline",
        Some(r"top-level object is a `a\nb.c` object"),
        || zip_of(&[("data.pkl", pkl)]),
    );
    let pkl = Pickle::state_dict(&"x".repeat(1 << 20), |p| {
        p.int(1);
    });
    run.expect("crafted/huge-name", Some("xxx [...] xxx"), || {
        zip_of(&[("data.pkl", &pkl)])
    });

    // Views with a zero stride address elements many times: a small one loads, one that
    // would take far more memory than its storage is an error, not an allocation.
    let pkl = Pickle::state_dict("w", |p| {
        p.tensor("0", 16, 0, &[8, 16], &[0, 1]);
    });
    run.expect("crafted/expanded", None, || {
        zip_of(&[("data.pkl", &pkl), ("data/0", &floats)])
    });
    for (id, size, stride) in [
        ("expand-huge", vec![1 << 20, 1 << 20], vec![0, 0]),
        ("expand-i64max", vec![i64::MAX], vec![0]),
        ("expand-overflow", vec![1 << 40, 1 << 40], vec![0, 0]),
        ("many-dims-expanded", vec![2; 64], vec![0; 64]),
    ] {
        let pkl = Pickle::state_dict("w", |p| {
            p.tensor("0", 16, 0, &size, &stride);
        });
        run.expect(
            &format!("crafted/{id}"),
            Some("needs far more memory than its storage of 64 bytes"),
            || zip_of(&[("data.pkl", &pkl), ("data/0", &floats)]),
        );
    }
    let pkl = Pickle::state_dict("w", |p| {
        p.tensor("0", 16, 0, &[1; 200], &[1; 200]);
    });
    run.expect("crafted/many-dims", None, || {
        zip_of(&[("data.pkl", &pkl), ("data/0", &floats)])
    });
    // A storage that claims more elements than a file can hold.
    let pkl = Pickle::state_dict("w", |p| {
        p.tensor("0", i64::MAX, 0, &[4], &[1]);
    });
    run.expect(
        "crafted/storage-numel-max",
        Some("bad storage size"),
        || zip_of(&[("data.pkl", &pkl), ("data/0", &floats)]),
    );

    // Nesting: 1M-deep tuples (a recursive drop overflows the stack) ...
    let mut deep = Pickle::default();
    deep.op(b"\x80\x02)").op(&[0x85; 1 << 20]).op(b".");
    run.expect(
        "crafted/deep-tuples",
        Some("top-level object is a tuple"),
        || zip_of(&[("data.pkl", &deep.0)]),
    );
    // ... deep dicts, built through the memo ...
    let mut deep = Pickle::default();
    deep.op(b"\x80\x02]r\x00\x00\x00\x00");
    for _ in 0..200_000 {
        // d = {"k": d}: a new dict whose item is the one in memo 0, memoized as memo 0.
        deep.op(b"0}X\x01\x00\x00\x00kj\x00\x00\x00\x00sr\x00\x00\x00\x00");
    }
    deep.op(b".");
    run.expect(
        "crafted/deep-dicts",
        Some("whose key `k` holds a dict, not a tensor"),
        || zip_of(&[("data.pkl", &deep.0)]),
    );
    // ... and _rebuild_from_type_v2 wrapping itself 100k times, which recurses when called.
    let mut deep = Pickle::default();
    deep.op(b"\x80\x02")
        .global("torch._tensor", "_rebuild_from_type_v2");
    deep.op(b"q\x00)");
    for _ in 0..100_000 {
        // (g, None, previous)
        deep.op(b"q\x010h\x00Nh\x01\x87");
    }
    deep.op(b"R.");
    run.expect(
        "crafted/deep-rebuild-from-type",
        Some("_rebuild_from_type_v2 nested too deep"),
        || zip_of(&[("data.pkl", &deep.0)]),
    );

    // Quadratic work: a 100k-item list memoized, then `set(that list)` 20k times (each call
    // copies it), or a 100 KB str used as a dict key 20k times (each insert hashes it).
    let copies = "the pickle copies far more data than its size justifies";
    let mut quad = Pickle::default();
    quad.op(b"\x80\x02]q\x00(").op(&[b'N'; 100_000]).op(b"e");
    quad.global("builtins", "set").op(b"q\x01");
    for _ in 0..20_000 {
        quad.op(b"h\x01h\x00\x85R0");
    }
    quad.op(b".");
    run.expect("crafted/quadratic-copies", Some(copies), || {
        zip_of(&[("data.pkl", &quad.0)])
    });
    let mut quad = Pickle::default();
    quad.op(b"\x80\x02}q\x00")
        .str(&"k".repeat(100_000))
        .op(b"q\x010");
    for _ in 0..20_000 {
        quad.op(b"h\x00h\x01Ns0");
    }
    quad.op(b".");
    run.expect("crafted/quadratic-hashing", Some(copies), || {
        zip_of(&[("data.pkl", &quad.0)])
    });
    let mut quad = Pickle::default();
    quad.op(b"\x80\x02]q\x00(").op(&[b'N'; 100_000]).op(b"e");
    quad.global("builtins", "set").op(b"q\x01(");
    for _ in 0..1_000 {
        // Kept on the stack: 1k copies of 100k values (~2.4 GB) unless something stops it.
        quad.op(b"h\x01h\x00\x85R");
    }
    quad.op(b"t.");
    run.expect("crafted/quadratic-memory", Some(copies), || {
        zip_of(&[("data.pkl", &quad.0)])
    });
}

#[test]
fn damaged_checkpoints_give_one_line_errors_and_never_panic() {
    let started = Instant::now();
    let scale: usize = std::env::var("PICKLE_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let zips: Vec<Fixture> = [
        "golden/dit/model.pt",
        "golden/dit/train-checkpoint.pt",
        "bad/dtypes.pt",
        "bad/wrapped.pt",
        "bad/module-prefix.pt",
        "bad/not-a-state-dict.pt",
        "bad/dict-of-ints.pt",
        "bad/whole-module.pt",
        "bad/uint16.pt",
    ]
    .iter()
    .map(|rel| Fixture::load(rel))
    .collect();
    let others: Vec<Fixture> = [
        "bad/legacy.pt",
        "bad/small.safetensors",
        "bad/dtypes.safetensors",
    ]
    .iter()
    .map(|rel| Fixture::load(rel))
    .collect();
    let mut run = Runner::new();

    // The fixtures themselves, re-zipped: the baseline the mutations start from.
    for f in &zips {
        let bytes = f.with_pkl(f.pkl());
        run.check(&format!("{}/rezip", f.name), &bytes);
    }
    let baseline_loaded = run.loaded;

    // (a) Truncations of the whole file.
    for f in zips.iter().chain(&others) {
        let big = f.bytes.len() > 100_000;
        let n = if big { 120 } else { 160 };
        let mut rng = Rng::new(seed_of(&f.name));
        for at in offsets(&mut rng, f.bytes.len(), n) {
            run.case(format!("{}/truncate@{at}", f.name), |_| {
                f.bytes[..at].to_vec()
            });
        }
    }

    for (i, f) in zips.iter().enumerate() {
        let pkl = f.pkl();
        let donor = zips[(i + 1) % zips.len()].pkl();
        let heavy = f.bytes.len() > 100_000;
        let per = |light: usize, heavy_n: usize| scale * if heavy { heavy_n } else { light };
        // (b) Point mutations of data.pkl.
        for k in 0..per(300, 120) {
            run.case(format!("{}/pkl-flip#{k}", f.name), |rng| {
                let mut p = pkl.to_vec();
                flip(rng, &mut p);
                f.with_pkl(&p)
            });
        }
        // (c) Truncations of data.pkl.
        let mut rng = Rng::new(seed_of(&format!("{}/pkl-cut", f.name)));
        for at in offsets(&mut rng, pkl.len(), per(120, 60)) {
            run.case(format!("{}/pkl-truncate@{at}", f.name), |_| {
                f.with_pkl(&pkl[..at])
            });
        }
        // (d) Spliced opcodes, 1 to 3 splices per case.
        for k in 0..per(200, 80) {
            run.case(format!("{}/pkl-splice#{k}", f.name), |rng| {
                let mut p = pkl.to_vec();
                for _ in 0..1 + rng.below(3) {
                    p = splice(rng, &p, donor);
                }
                f.with_pkl(&p)
            });
        }
        // (e) Damaged storage entries.
        for k in 0..per(40, 30) {
            run.case(format!("{}/storage#{k}", f.name), |rng| {
                damage_storage(rng, f)
            });
        }
    }

    // (f) Point mutations anywhere in the small zips (headers included: the zip reader's
    // own error paths).
    for f in zips.iter().filter(|f| f.bytes.len() < 100_000) {
        for k in 0..scale * 60 {
            run.case(format!("{}/zip-flip#{k}", f.name), |rng| {
                let mut b = f.bytes.clone();
                flip(rng, &mut b);
                b
            });
        }
    }

    crafted(&mut run);

    let took = started.elapsed();
    let peak = peak_rss();
    eprintln!(
        "pickle fuzz: {} cases ({} loaded) in {took:?}; slowest {:?} ({}); peak RSS {} MiB",
        run.cases,
        run.loaded,
        run.slowest.0,
        run.slowest.1,
        peak.map_or("?".into(), |b| (b >> 20).to_string())
    );
    for (kind, n) in &run.kinds {
        eprintln!("  {n:5}  {kind}");
    }
    assert!(
        run.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        run.failures.len(),
        run.cases,
        run.failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    if let Some(peak) = peak.filter(|&p| p > PEAK_RSS_LIMIT) {
        panic!("peak RSS {} MiB: a case allocated absurdly", peak >> 20);
    }
    if run.only.is_none() {
        // model.pt, train-checkpoint.pt, dtypes.pt, wrapped.pt and module-prefix.pt.
        assert_eq!(
            baseline_loaded, 5,
            "the fixtures with a state dict must load"
        );
        assert!(run.cases >= 5000, "only {} cases", run.cases);
    }
}
