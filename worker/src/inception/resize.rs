//! The bilinear resize of TF 1.x's `ResizeBilinear` (align_corners=False, no half-pixel
//! centres: source coordinate `x_out * in / out`), as torch-fidelity's
//! `interpolate_bilinear_2d_like_tensorflow1x(..., align_corners=False, method="slow")`
//! (interpolate_compat_tensorflow.py, `resample_manually`) computes it, op for op in float32,
//! so its bits are torch-fidelity's.
use tch::{Device, Kind, Tensor};

/// Resizes float32 `(N, C, H, W)` to `(N, C, size, size)`.
pub(crate) fn resize_bilinear_tf1(x: &Tensor, size: i64) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let device = x.device();
    let (y_lo, y_hi, dy) = grid(h, size, device);
    let (x_lo, x_hi, dx) = grid(w, size, device);
    let rows_lo = x.index_select(2, &y_lo);
    let rows_hi = x.index_select(2, &y_hi);
    let in_00 = rows_lo.index_select(3, &x_lo);
    let in_01 = rows_lo.index_select(3, &x_hi);
    let in_10 = rows_hi.index_select(3, &x_lo);
    let in_11 = rows_hi.index_select(3, &x_hi);
    let dx = dx.view([1, 1, 1, size]);
    let in_0 = &in_00 + (&in_01 - &in_00) * &dx;
    let in_1 = &in_10 + (&in_11 - &in_10) * &dx;
    &in_0 + (&in_1 - &in_0) * dy.view([1, 1, size, 1])
}

/// One axis: `grid = arange(out) * float32(in / out)`, `lo = grid.long()`,
/// `hi = min(lo + 1, in - 1)`, `d = grid - lo`.
fn grid(input: i64, out: i64, device: Device) -> (Tensor, Tensor, Tensor) {
    // torch.tensor(scale, dtype=torch.float32) of the Python float `in_size / out_size`.
    let scale = Tensor::from((input as f64 / out as f64) as f32).to_device(device);
    let g = Tensor::arange_start_step(0, out, 1, (Kind::Float, device)) * scale;
    let lo = g.to_kind(Kind::Int64);
    let hi = (&lo + 1).clamp_max(input - 1);
    let d = &g - lo.to_kind(Kind::Float);
    (lo, hi, d)
}
