//! `fidshard grid CONFIG|OUT [--n 64] [--cols 8] [--classes 88,207,360] [--out FILE]`: one PNG
//! of a job's samples in rows, each labelled with its index and class (ImageNet's class names
//! for 1000-class models, numbers otherwise), to look at results without opening PNGs one by
//! one. Works while the job runs: it reads the PNGs that exist and computes each sample's
//! label from the job's settings (the random-number contract, fidshard-core's labels.rs).
use crate::job::config::Job;
use crate::job::fingerprint::Fingerprint;
use crate::outdir::OutDir;
use anyhow::{anyhow, Context, Result};
use fidshard_core::labels::{label_of, LabelMode};
use fidshard_core::output::png_name;
use std::path::{Path, PathBuf};

/// The 1000 ImageNet class names (the first lemma of each synset, in the standard class order;
/// from timm's `imagenet_synsets.txt` and `imagenet_synset_to_lemma.txt`).
const IMAGENET_CLASSES: &str = include_str!("../../assets/imagenet-classes.txt");

/// Cells are at least this wide, so that their labels fit.
const MIN_CELL: u32 = 64;
const GLYPH: u32 = 8;
const PAD: u32 = 2;

#[derive(clap::Args)]
pub(crate) struct GridArgs {
    /// The job's YAML file, or its out dir.
    target: PathBuf,
    /// How many samples.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Samples per row.
    #[arg(long, default_value_t = 8)]
    cols: usize,
    /// Only samples of these classes (comma-separated class ids), class by class.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<i64>,
    /// Output PNG (default: OUT/grid.png).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What labels samples: the settings of the random-number contract.
struct Labeler {
    seed: u64,
    mode: LabelMode,
    num_classes: i64,
    num_samples: u64,
}

impl Labeler {
    fn label(&self, i: u64) -> i64 {
        label_of(self.seed, i, self.mode, self.num_classes)
    }
}

fn from_fingerprint(out: &Path) -> Result<Labeler> {
    let fp: Fingerprint = crate::outdir::state::saved_fingerprint(out).ok_or_else(|| {
        fidshard_core::input_error!(
            "{}: no fingerprint.json (no run has started here); pass the job's YAML file",
            out.display()
        )
    })?;
    let get = |k: &str| {
        fp.get(k)
            .ok_or_else(|| anyhow!("{}: fingerprint.json has no `{k}`", out.display()))
    };
    let dit: fidshard_core::DiTConfig = serde_json::from_str(get("dit")?)?;
    let mode: LabelMode = serde_json::from_value(serde_json::Value::String(get("labels")?.into()))?;
    Ok(Labeler {
        seed: get("seed")?.parse()?,
        mode,
        num_classes: dit.num_classes,
        num_samples: get("num_samples")?.parse()?,
    })
}

fn class_name(class: i64, num_classes: i64) -> String {
    if class == num_classes {
        return "uncond".into();
    }
    if num_classes == 1000 {
        if let Some(name) = IMAGENET_CLASSES.lines().nth(class as usize) {
            return name.to_string();
        }
    }
    class.to_string()
}

pub(crate) fn run(args: GridArgs) -> Result<()> {
    if args.n == 0 || args.cols == 0 {
        return Err(fidshard_core::input_error!(
            "--n and --cols must be at least 1"
        ));
    }
    let (out_dir, labeler) = labeler_for(&args.target)?;
    let samples = OutDir::new(&out_dir).samples();
    let exists = |i: u64| samples.join(png_name(i, labeler.num_samples)).is_file();
    let chosen = if args.classes.is_empty() {
        first_existing(&labeler, args.n, exists)
    } else {
        of_classes(&labeler, &args.classes, args.n, exists)?
    };
    if chosen.is_empty() {
        return Err(fidshard_core::input_error!(
            "{}: no sample PNGs{} yet",
            samples.display(),
            if args.classes.is_empty() {
                ""
            } else {
                " of those classes"
            }
        ));
    }
    let images: Vec<image::RgbImage> = chosen
        .iter()
        .map(|(i, _)| {
            let p = samples.join(png_name(*i, labeler.num_samples));
            image::open(&p)
                .with_context(|| format!("reading {}", p.display()))
                .map(|im| im.to_rgb8())
        })
        .collect::<Result<_>>()?;
    let side = images[0].width();
    let grid = draw(&images, &chosen, side, args.cols, labeler.num_classes);
    let path = args.out.unwrap_or_else(|| out_dir.join("grid.png"));
    grid.save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    crate::sys::out::outln!(
        "{}: {} samples, {} x {} px",
        path.display(),
        chosen.len(),
        grid.width(),
        grid.height()
    );
    Ok(())
}

/// The out dir and the labels of the job a target names: from its YAML file, or from the
/// fingerprint its out dir recorded.
fn labeler_for(target: &Path) -> Result<(PathBuf, Labeler)> {
    if target.is_file() {
        let job = Job::load_without_weights(target)?;
        let s = &job.settings;
        let l = Labeler {
            seed: s.seed,
            mode: s.labels,
            num_classes: s.dit.num_classes,
            num_samples: s.num_samples,
        };
        Ok((job.out_dir, l))
    } else if target.is_dir() {
        Ok((target.to_path_buf(), from_fingerprint(target)?))
    } else {
        Err(fidshard_core::input_error!(
            "{}: no such job file or out dir",
            target.display()
        ))
    }
}

/// The first `n` samples whose PNG exists, with their labels.
fn first_existing(labeler: &Labeler, n: usize, exists: impl Fn(u64) -> bool) -> Vec<(u64, i64)> {
    (0..labeler.num_samples)
        .filter(|&i| exists(i))
        .take(n)
        .map(|i| (i, labeler.label(i)))
        .collect()
}

/// The first samples of each class in `classes` whose PNG exists, class by class, `n` in all.
fn of_classes(
    labeler: &Labeler,
    classes: &[i64],
    n: usize,
    exists: impl Fn(u64) -> bool,
) -> Result<Vec<(u64, i64)>> {
    let per_class = n.div_ceil(classes.len());
    let mut chosen = Vec::new();
    for &c in classes {
        if c < 0 || c > labeler.num_classes {
            return Err(fidshard_core::input_error!(
                "--classes: {c} is not a class of this model (0..{})",
                labeler.num_classes
            ));
        }
        // Bounded scan: with random labels a class turns up every num_classes samples.
        chosen.extend(
            (0..labeler.num_samples)
                .filter(|&i| labeler.label(i) == c && exists(i))
                .take(per_class)
                .map(|i| (i, c)),
        );
    }
    chosen.truncate(n);
    Ok(chosen)
}

/// Lays the images out `cols` per row, each scaled by an integer factor to at least
/// [`MIN_CELL`] px, with two label lines under it: `#index` and the class.
fn draw(
    images: &[image::RgbImage],
    chosen: &[(u64, i64)],
    side: u32,
    cols: usize,
    num_classes: i64,
) -> image::RgbImage {
    let scale = MIN_CELL.div_ceil(side).max(1);
    let cell = side * scale;
    let text_h = 2 * GLYPH + 2 * PAD;
    let (cw, ch) = (cell + 2 * PAD, cell + PAD + text_h);
    let cols = cols.min(images.len()) as u32;
    let rows = (images.len() as u32).div_ceil(cols);
    let mut out = image::RgbImage::from_pixel(cols * cw, rows * ch, image::Rgb([255, 255, 255]));
    for (k, (img, (index, class))) in images.iter().zip(chosen).enumerate() {
        let (x0, y0) = ((k as u32 % cols) * cw + PAD, (k as u32 / cols) * ch + PAD);
        for y in 0..cell {
            for x in 0..cell {
                let p = img.get_pixel(
                    (x / scale).min(img.width() - 1),
                    (y / scale).min(img.height() - 1),
                );
                out.put_pixel(x0 + x, y0 + y, *p);
            }
        }
        let max_chars = (cell / GLYPH) as usize;
        let line1: String = format!("#{index}").chars().take(max_chars).collect();
        let line2: String = class_name(*class, num_classes)
            .chars()
            .take(max_chars)
            .collect();
        text(&mut out, x0, y0 + cell + PAD, &line1);
        text(&mut out, x0, y0 + cell + PAD + GLYPH + 1, &line2);
    }
    out
}

/// Draws `s` in the 8x8 bitmap font of the `font8x8` crate, black on the background.
fn text(img: &mut image::RgbImage, x0: u32, y0: u32, s: &str) {
    use font8x8::UnicodeFonts;
    for (k, c) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS
            .get(c)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
        else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    let (x, y) = (x0 + k as u32 * GLYPH + col, y0 + row as u32);
                    if x < img.width() && y < img.height() {
                        img.put_pixel(x, y, image::Rgb([0, 0, 0]));
                    }
                }
            }
        }
    }
}
