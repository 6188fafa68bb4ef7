//! The statistics of a comparison, each small enough to check by hand: means with Student's t
//! intervals, the Mann–Whitney U test (exact for small samples without ties, normal
//! approximation otherwise), a seeded bootstrap interval of a ratio of means, and
//! distribution-free intervals of a percentile.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Bootstrap resamples of a ratio of means.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Above this many values on both sides together the ratio's interval uses the normal
/// approximation (delta method) instead of resampling: the two agree closely at that size, and
/// resampling thousands of repetitions for every job and metric would cost seconds.
pub const BOOTSTRAP_MAX_VALUES: usize = 400;
/// Exact Mann–Whitney p-values up to this many values per side (and no ties).
const EXACT_MAX: usize = 30;

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sample standard deviation (n − 1); None below two values.
pub fn std_dev(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let m = mean(v);
    let ss: f64 = v.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (v.len() - 1) as f64).sqrt())
}

/// 95% confidence interval of the mean (Student's t); None below two values.
pub fn mean_ci(v: &[f64]) -> Option<(f64, f64)> {
    let sd = std_dev(v)?;
    let n = v.len() as f64;
    let t = StudentsT::new(0.0, 1.0, n - 1.0).ok()?.inverse_cdf(0.975);
    let m = mean(v);
    let half = t * sd / n.sqrt();
    Some((m - half, m + half))
}

/// Two-sided p-value of the Mann–Whitney U test that `a` and `b` come from the same
/// distribution. Exact (from U's distribution) for up to 30 values a side without ties; else
/// the normal approximation with tie and continuity corrections. 1.0 when either side is empty.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    // Ranks of the pooled values, ties given their mid-rank.
    let mut pooled: Vec<(f64, bool)> = a
        .iter()
        .map(|x| (*x, true))
        .chain(b.iter().map(|x| (*x, false)))
        .collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = pooled.len();
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for p in &pooled[i..=j] {
            if p.1 {
                rank_sum_a += rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_a - (n1 * (n1 + 1)) as f64 / 2.0;
    let (f1, f2) = (n1 as f64, n2 as f64);
    if tie_term == 0.0 && n1 <= EXACT_MAX && n2 <= EXACT_MAX {
        return exact_p(n1, n2, u.round() as usize);
    }
    let mu = f1 * f2 / 2.0;
    let nn = f1 + f2;
    let var = f1 * f2 / 12.0 * ((nn + 1.0) - tie_term / (nn * (nn - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    let z = ((u - mu).abs() - 0.5).max(0.0) / var.sqrt();
    let normal = Normal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!("standard normal"));
    (2.0 * (1.0 - normal.cdf(z))).min(1.0)
}

/// P(U ≤ u) and P(U ≥ u) under the null, from U's distribution: the coefficients of the
/// Gaussian binomial [n1+n2 choose n1] in q.
fn exact_p(n1: usize, n2: usize, u: usize) -> f64 {
    let len = n1 * n2 + 1;
    let mut c = vec![0.0f64; len];
    c[0] = 1.0;
    for i in 1..=n1 {
        // × (1 − q^(n2+i)), then ÷ (1 − q^i).
        let k = n2 + i;
        for j in (k..len).rev() {
            c[j] -= c[j - k];
        }
        for j in i..len {
            c[j] += c[j - i];
        }
    }
    let total: f64 = c.iter().sum();
    let u = u.min(len - 1);
    let low: f64 = c[..=u].iter().sum();
    let high: f64 = c[u..].iter().sum();
    (2.0 * low.min(high) / total).min(1.0)
}

/// 95% interval of mean(new) / mean(base): a percentile bootstrap with a fixed seed (same
/// inputs, same interval) up to [`BOOTSTRAP_MAX_VALUES`] values, the delta method above.
/// None when a mean is zero or a side has fewer than two values.
pub fn ratio_ci(base: &[f64], new: &[f64], seed: u64) -> Option<(f64, f64)> {
    if base.len() < 2 || new.len() < 2 {
        return None;
    }
    let (mb, mn) = (mean(base), mean(new));
    if mb == 0.0 || mn == 0.0 {
        return None;
    }
    if base.len() + new.len() > BOOTSTRAP_MAX_VALUES {
        // log(mean_new / mean_base) is approximately normal with variance
        // s_n² / (n_n m_n²) + s_b² / (n_b m_b²).
        let rel_var = |v: &[f64], m: f64| {
            let sd = std_dev(v).unwrap_or(0.0);
            sd * sd / (v.len() as f64 * m * m)
        };
        let se = (rel_var(base, mb) + rel_var(new, mn)).sqrt();
        let r = mn / mb;
        return Some((r * (-1.96 * se).exp(), r * (1.96 * se).exp()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let resample_mean = |v: &[f64], rng: &mut ChaCha8Rng| {
        let mut s = 0.0;
        for _ in 0..v.len() {
            s += v[rng.random_range(0..v.len())];
        }
        s / v.len() as f64
    };
    let mut ratios: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .filter_map(|_| {
            let b = resample_mean(base, &mut rng);
            let n = resample_mean(new, &mut rng);
            (b != 0.0).then(|| n / b)
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some((quantile(&ratios, 0.025), quantile(&ratios, 0.975)))
}

/// The q-quantile of sorted values, interpolating linearly between order statistics (the
/// definition polars and numpy use by default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A distribution-free 95% interval of the q-quantile: the order statistics whose ranks bound
/// a binomial(n, q) count (normal approximation).
pub fn quantile_ci(sorted: &[f64], q: f64) -> Option<(f64, f64)> {
    let n = sorted.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let half = 1.96 * (nf * q * (1.0 - q)).sqrt();
    let lo = ((nf * q - half).floor().max(1.0) as usize).min(n) - 1;
    let hi = ((nf * q + half).ceil().max(1.0) as usize).min(n) - 1;
    Some((sorted[lo], sorted[hi]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_mann_whitney_matches_tables() {
        // Complete separation, 3 vs 3: U = 0, P = 2 / C(6,3) = 0.1.
        let p = mann_whitney_p(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert!((p - 0.1).abs() < 1e-12, "{p}");
        // 5 vs 5, separated: 2 / 252.
        let p = mann_whitney_p(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]);
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        // Interleaved: U = 12.5 of 25 is the centre, p = 1 (here U = 12 or 13).
        let p = mann_whitney_p(&[1.0, 3.0, 5.0, 7.0, 9.0], &[2.0, 4.0, 6.0, 8.0, 10.0]);
        assert!(p > 0.6, "{p}");
        // scipy.stats.mannwhitneyu([1,2,3,4,6],[5,7,8,9,10], method="exact"): U = 1, p = 0.015873.
        let p = mann_whitney_p(&[1.0, 2.0, 3.0, 4.0, 6.0], &[5.0, 7.0, 8.0, 9.0, 10.0]);
        assert!((p - 0.015873).abs() < 1e-6, "{p}");
    }

    #[test]
    fn normal_approximation_with_ties() {
        // scipy.stats.mannwhitneyu(a, b, method="asymptotic") with continuity correction:
        // a = [1]*10 + [2]*10, b = [2]*10 + [3]*10 → U = 50, p = 0.0006.
        let a: Vec<f64> = [1.0; 10].iter().chain([2.0; 10].iter()).copied().collect();
        let b: Vec<f64> = [2.0; 10].iter().chain([3.0; 10].iter()).copied().collect();
        let p = mann_whitney_p(&a, &b);
        assert!(p < 1e-4 && p > 1e-6, "{p}");
        assert_eq!(mann_whitney_p(&[5.0; 10], &[5.0; 10]), 1.0);
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_ratio() {
        let base = [100.0, 102.0, 98.0, 101.0, 99.0];
        let new = [90.0, 91.0, 89.0, 92.0, 88.0];
        let a = ratio_ci(&base, &new, 7);
        assert_eq!(a, ratio_ci(&base, &new, 7));
        let (lo, hi) = a.unwrap_or((0.0, 0.0));
        assert!(lo < 0.9 && 0.9 < hi && hi < 0.95, "{lo} {hi}");
        // The delta method for large samples gives about the same interval.
        let big_b: Vec<f64> = (0..300).map(|i| base[i % 5]).collect();
        let big_n: Vec<f64> = (0..300).map(|i| new[i % 5]).collect();
        let (lo, hi) = ratio_ci(&big_b, &big_n, 7).unwrap_or((0.0, 0.0));
        assert!(lo < 0.9 && 0.9 < hi && hi - lo < 0.01, "{lo} {hi}");
    }

    #[test]
    fn quantiles_and_their_intervals() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&v, 0.5) - 50.5).abs() < 1e-12);
        assert!((quantile(&v, 0.9) - 90.1).abs() < 1e-9);
        let (lo, hi) = quantile_ci(&v, 0.9).unwrap_or((0.0, 0.0));
        assert!(
            lo <= 90.0 && hi >= 91.0 && lo >= 80.0 && hi <= 98.0,
            "{lo} {hi}"
        );
        let m = mean_ci(&[1.0, 2.0, 3.0]).unwrap_or((0.0, 0.0));
        // t(0.975, 2) = 4.303: 2 ± 4.303 · 1 / √3.
        assert!((m.0 - (2.0 - 4.302653 / 3f64.sqrt())).abs() < 1e-5, "{m:?}");
    }
}
