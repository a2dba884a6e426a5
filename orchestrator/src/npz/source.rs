//! Reading the sample PNGs: one file read per image (CRC and decode from the same bytes), and a
//! small pool that decodes ahead of the writer in index order. PNG decoding is the slow part
//! (about 1 ms per 256^2 image per core, 4 at 512^2) while copying into the zip runs at memory
//! speed, so decoding on several cores is what makes 50k images take seconds, not minutes. The
//! pool never holds more than `window` decoded images, so memory stays a few MB whatever N is.
use image::ImageDecoder;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

/// Why one sample cannot be used. The coordinator redoes the shards of such indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SampleError {
    Missing,
    /// Unreadable, undecodable, of the wrong size or colour type, or failing its CRC; the
    /// message names the file.
    Bad(String),
    /// The decoder panicked (a bug in it, on a hostile file).
    Panicked,
}

/// Reads `path` into `buf` (reused between calls), checks its CRC32 when one is expected and
/// decodes it, requiring `side x side` 8-bit RGB. Returns the `side * side * 3` pixels.
pub(crate) fn load_png(
    path: &Path,
    side: u32,
    expected_crc: Option<u32>,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, SampleError> {
    let bad = |msg: String| SampleError::Bad(format!("{}: {msg}", path.display()));
    let read = fidshard_core::output::read_regular(path, buf);
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SampleError::Missing),
        Err(e) => return Err(bad(format!("cannot read: {e}"))),
        Ok(_) => {}
    }
    if let Some(expected) = expected_crc {
        let crc = crc32fast::hash(buf);
        if crc != expected {
            return Err(bad(format!(
                "CRC32 {crc:08x} differs from the {expected:08x} recorded when it was written \
                 ({} bytes now)",
                buf.len()
            )));
        }
    }
    let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(&buf[..]))
        .map_err(|e| bad(format!("not a readable PNG: {e}")))?;
    let (w, h) = decoder.dimensions();
    let color = decoder.color_type();
    if (w, h) != (side, side) || color != image::ColorType::Rgb8 {
        return Err(bad(format!(
            "image is {w}x{h} {color:?}, expected {side}x{side} Rgb8"
        )));
    }
    let mut pixels = vec![0u8; side as usize * side as usize * 3];
    decoder
        .read_image(&mut pixels)
        .map_err(|e| bad(format!("not a readable PNG: {e}")))?;
    Ok(pixels)
}

pub(crate) type Loaded = Result<Vec<u8>, SampleError>;

/// Calls `load(i)` for `i` in `0..n` on `threads` threads and `sink(i, result)` on this thread
/// in increasing `i`, with at most `window` results waiting. `sink` returning `Break` stops
/// the loads. A panicking `load` (a decoder bug on a hostile file) counts as a bad sample, so
/// that one file cannot hang or kill the assembly.
pub(crate) fn ordered_load(
    n: u64,
    threads: usize,
    window: u64,
    load: impl Fn(u64, &mut Vec<u8>) -> Loaded + Sync,
    mut sink: impl FnMut(u64, Loaded) -> ControlFlow<()>,
) {
    let window = window.max(1);
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    // Number of results handed to `sink`; a loader may start index `i` only when
    // `i < consumed + window`. The loader of index `consumed` is never held back, so this
    // cannot deadlock.
    let consumed = Mutex::new(0u64);
    let advanced = Condvar::new();
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<(u64, Loaded)>(window as usize);
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let (next, stop, consumed, advanced, load) =
                (&next, &stop, &consumed, &advanced, &load);
            s.spawn(move || {
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let mut c = consumed.lock().unwrap_or_else(|e| e.into_inner());
                    while i >= *c + window && !stop.load(Ordering::Relaxed) {
                        c = advanced.wait(c).unwrap_or_else(|e| e.into_inner());
                    }
                    drop(c);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        load(i, &mut buf)
                    }))
                    .unwrap_or(Err(SampleError::Panicked));
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = std::collections::BTreeMap::new();
        let mut expected = 0u64;
        'recv: for (i, r) in rx.iter() {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&expected) {
                let flow = sink(expected, r);
                expected += 1;
                *consumed.lock().unwrap_or_else(|e| e.into_inner()) = expected;
                advanced.notify_all();
                if flow.is_break() {
                    break 'recv;
                }
            }
        }
        // Early stop (or done): release loaders waiting on the window; the receiver is dropped
        // at the end of this closure, which fails their pending sends.
        stop.store(true, Ordering::Relaxed);
        let _guard = consumed.lock().unwrap_or_else(|e| e.into_inner());
        advanced.notify_all();
    });
}
