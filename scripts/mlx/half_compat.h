/* minerva: mlx-c's mlx/c/half.h declares float16_t/bfloat16_t (and the float16/bfloat16
 * accessors that mlx-rs binds) only on aarch64. On x86_64 this header, passed with `-include`
 * to both the mlx-c build and bindgen by scripts/setup-mlx.sh, declares them as 16-bit storage
 * types: the accessors only copy bits (`item<T>()`, `data<T>()`), so a uint16_t of the same size
 * is exact in C++. For bindgen float16_t is `__fp16`, which it binds as a newtype over u16, the
 * shape mlx-rs expects; bfloat16_t is a plain u16 for mlx-rs. */
#ifndef MINERVA_MLX_HALF_COMPAT_H
#define MINERVA_MLX_HALF_COMPAT_H
#if !defined(__aarch64__)
#include <stdint.h>
#define HAS_FLOAT16
#define HAS_BFLOAT16
#if defined(MINERVA_BINDGEN)
typedef __fp16 float16_t;
#else
typedef uint16_t float16_t;
#endif
typedef uint16_t bfloat16_t;
#endif
#endif
