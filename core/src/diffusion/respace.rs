//! Timestep respacing: `space_timesteps` of the reference's `respace.py`, and the betas of the
//! shortened chain that `SpacedDiffusion.__init__` derives from the base schedule.
use std::collections::BTreeSet;

/// Why a `steps` spec (`"250"`, `"10,20,30"`, `"ddim50"`) cannot be used. Every message starts
/// with the spec itself, e.g. `steps "ddim600": no stride of 1000 steps gives exactly 600 ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespaceError {
    #[error("steps {spec:?}: empty; expected a step count such as \"250\", section counts such as \"10,20,30\", or \"ddimN\"")]
    Empty { spec: String },

    #[error("steps {spec:?}: {part:?} is not a non-negative integer; expected a step count such as \"250\", section counts such as \"10,20,30\", or \"ddimN\"")]
    NotAnInteger { spec: String, part: String },

    #[error("steps {spec:?}: 0 sampling steps; at least 1 is needed")]
    ZeroSteps { spec: String },

    #[error("steps {spec:?}: no stride of {num_timesteps} steps gives exactly {count} timesteps (DDIM striding takes range(0, {num_timesteps}, stride)); nearest that work: {}", fmt_ddim(.nearest))]
    NoDdimStride {
        spec: String,
        num_timesteps: usize,
        count: usize,
        /// The achievable counts just below and just above `count` (one of them may be missing).
        nearest: Vec<usize>,
    },

    #[error("steps {spec:?}: section of {size} steps cannot be split into {count}")]
    SectionTooSmall {
        spec: String,
        size: usize,
        count: usize,
    },
}

fn fmt_ddim(counts: &[usize]) -> String {
    if counts.is_empty() {
        return "none".to_string();
    }
    counts
        .iter()
        .map(|n| format!("\"ddim{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `space_timesteps(num_timesteps, section_counts)` for a string spec:
///  - `"ddimN"`: the first stride `i` in `1..num_timesteps` with `len(range(0, T, i)) == N`;
///  - `"a,b,c"` (or one count `"N"`): the T steps are cut into as many equal sections (the first
///    `T % n` one step longer), and section k is strided to `a`, `b`, ... steps with
///    `start + round(cur)` where `cur` advances by `(size - 1) / (count - 1)` and `round` is
///    Python's (ties to even).
///
/// The reference treats `""` as "all steps" in `create_diffusion`; here an empty spec is an error,
/// as are a total of 0 steps and non-integer counts (where the reference would raise or build an
/// empty chain).
pub fn space_timesteps(num_timesteps: usize, spec: &str) -> Result<BTreeSet<usize>, RespaceError> {
    let err_spec = || spec.to_string();
    let trimmed = spec.trim();
    if trimmed.is_empty() {
        return Err(RespaceError::Empty { spec: err_spec() });
    }
    let parse = |part: &str| -> Result<usize, RespaceError> {
        let p = part.trim();
        // Digits only (Rust's parser would also take a leading '+'; Python's int() takes it too,
        // so that is harmless, but reject signs and everything else for clarity).
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RespaceError::NotAnInteger {
                spec: err_spec(),
                part: part.to_string(),
            });
        }
        p.parse::<usize>().map_err(|_| RespaceError::NotAnInteger {
            spec: err_spec(),
            part: part.to_string(),
        })
    };

    if let Some(rest) = trimmed.strip_prefix("ddim") {
        let count = parse(rest)?;
        if count == 0 {
            return Err(RespaceError::ZeroSteps { spec: err_spec() });
        }
        // Reference: `for i in range(1, num_timesteps): if len(range(0, T, i)) == desired_count`.
        for stride in 1..num_timesteps {
            if num_timesteps.div_ceil(stride) == count {
                return Ok((0..num_timesteps).step_by(stride).collect());
            }
        }
        let achievable: BTreeSet<usize> = (1..num_timesteps)
            .map(|s| num_timesteps.div_ceil(s))
            .collect();
        let nearest = achievable
            .range(..count)
            .next_back()
            .into_iter()
            .chain(achievable.range(count..).next())
            .copied()
            .collect();
        return Err(RespaceError::NoDdimStride {
            spec: err_spec(),
            num_timesteps,
            count,
            nearest,
        });
    }

    let counts = trimmed
        .split(',')
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    if counts.iter().sum::<usize>() == 0 {
        return Err(RespaceError::ZeroSteps { spec: err_spec() });
    }
    let size_per = num_timesteps / counts.len();
    let extra = num_timesteps % counts.len();
    let mut start = 0usize;
    let mut all_steps = BTreeSet::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(RespaceError::SectionTooSmall {
                spec: err_spec(),
                size,
                count,
            });
        }
        let frac_stride = if count <= 1 {
            1.0
        } else {
            (size - 1) as f64 / (count - 1) as f64
        };
        let mut cur = 0.0f64;
        for _ in 0..count {
            // Python's round() on a float: to the nearest integer, ties to even.
            all_steps.insert(start + cur.round_ties_even() as usize);
            cur += frac_stride;
        }
        start += size;
    }
    Ok(all_steps)
}

/// `SpacedDiffusion.__init__`: walks the base chain's `alphas_cumprod` and, for each kept step
/// `i` (in increasing order), emits `beta = 1 - alphas_cumprod[i] / last_alpha_cumprod` and
/// `timestep_map.push(i)`. Returns `(new_betas, timestep_map)`.
pub fn respace_betas(base_betas: &[f64], use_timesteps: &BTreeSet<usize>) -> (Vec<f64>, Vec<i64>) {
    let mut last_alpha_cumprod = 1.0f64;
    let mut alpha_cumprod = 1.0f64;
    let mut new_betas = Vec::with_capacity(use_timesteps.len());
    let mut timestep_map = Vec::with_capacity(use_timesteps.len());
    for (i, &beta) in base_betas.iter().enumerate() {
        // np.cumprod(1.0 - betas): a running product in index order.
        alpha_cumprod *= 1.0 - beta;
        if use_timesteps.contains(&i) {
            new_betas.push(1.0 - alpha_cumprod / last_alpha_cumprod);
            last_alpha_cumprod = alpha_cumprod;
            timestep_map.push(i as i64);
        }
    }
    (new_betas, timestep_map)
}
