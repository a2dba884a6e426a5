//! GPU precision modes (see `settings::Precision`), through the C++ shim in csrc/precision.cpp.
use crate::settings::Precision;
use tch::Device;

extern "C" {
    fn fidshard_set_tf32(cublas: i32, cudnn: i32);
    fn fidshard_tf32_cublas() -> i32;
    fn fidshard_autocast_enter(bf16: i32) -> i32;
    fn fidshard_autocast_exit(prev: i32);
}

/// Sets the process-wide TF32 flags for a precision mode: on for `tf32` (and under autocast,
/// where it only affects the float32 ops that autocast keeps), off for strict `fp32`.
pub fn configure(precision: Precision) {
    let on = !matches!(precision, Precision::Fp32);
    // SAFETY: plain setters of libtorch's global context.
    unsafe { fidshard_set_tf32(i32::from(on), i32::from(on)) }
}

/// Whether cuBLAS may use TF32 now (for logs and tests).
pub fn tf32_enabled() -> bool {
    // SAFETY: plain getter of libtorch's global context.
    unsafe { fidshard_tf32_cublas() != 0 }
}

/// Runs `f` under CUDA autocast in bfloat16 or float16. On a CPU device it just runs `f`:
/// CPU sampling is always float32.
pub fn autocast<T>(device: Device, precision: Precision, f: impl FnOnce() -> T) -> T {
    if !device.is_cuda() {
        return f();
    }
    let bf16 = i32::from(precision == Precision::Bf16);
    // SAFETY: the shim mirrors torch.autocast's enter/exit; exit runs even if `f` panics.
    let prev = unsafe { fidshard_autocast_enter(bf16) };
    struct Exit(i32);
    impl Drop for Exit {
        fn drop(&mut self) {
            unsafe { fidshard_autocast_exit(self.0) }
        }
    }
    let _exit = Exit(prev);
    f()
}
