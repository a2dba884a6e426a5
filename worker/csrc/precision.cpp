// Precision switches of libtorch that tch 0.24 does not expose: the autocast dtype (tch's
// `autocast` always uses the CUDA default, float16) and the TF32 flags of cuBLAS / cuDNN
// (`torch.backends.cuda.matmul.allow_tf32`, `torch.backends.cudnn.allow_tf32`).
// Written by hand because no crate wraps these; each function is one libtorch call.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

extern "C" {

void fidshard_set_tf32(int cublas, int cudnn) {
  at::globalContext().setAllowTF32CuBLAS(cublas != 0);
  at::globalContext().setAllowTF32CuDNN(cudnn != 0);
}

int fidshard_tf32_cublas() { return at::globalContext().allowTF32CuBLAS() ? 1 : 0; }

// Enters CUDA autocast with bfloat16 (bf16 != 0) or float16; returns the previous enabled flag.
int fidshard_autocast_enter(int bf16) {
  bool prev = at::autocast::is_autocast_enabled(at::kCUDA);
  at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::increment_nesting();
  return prev ? 1 : 0;
}

void fidshard_autocast_exit(int prev) {
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_enabled(at::kCUDA, prev != 0);
}
}
