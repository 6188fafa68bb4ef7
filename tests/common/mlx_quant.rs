//! MLX's affine quantization, written out for the tests that build MLX-format directories.

/// MLX affine quantization of a `[out, in]` F32 matrix: per group of `group` columns,
/// scale = (max − min) / (2^bits − 1), bias = min; values packed little-end first into U32 words.
pub fn mlx_quantize(w: &[Vec<f32>], group: usize, bits: u32) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
    let levels = ((1u32 << bits) - 1) as f32;
    let per_word = (32 / bits) as usize;
    let (mut packed, mut scales, mut biases) = (Vec::new(), Vec::new(), Vec::new());
    for row in w {
        let mut q = Vec::with_capacity(row.len());
        for g in row.chunks(group) {
            let (lo, hi) = g
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            let scale = ((hi - lo) / levels).max(f32::MIN_POSITIVE);
            scales.push(scale);
            biases.push(lo);
            q.extend(
                g.iter()
                    .map(|&x| ((x - lo) / scale).round().clamp(0.0, levels) as u32),
            );
        }
        for word in q.chunks(per_word) {
            packed.push(
                word.iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, &v)| acc | (v << (bits as usize * i))),
            );
        }
    }
    (packed, scales, biases)
}
