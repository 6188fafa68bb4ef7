//! Output agreement: do two engines, given the same prompt tokens, produce the same greedy
//! output? Speed without correctness is not a benchmark.
//!
//! Each in-process backend stores, for the first measured repetition of a text scenario, the
//! greedy output ids and a digest of the prompt ids. For every pair of jobs on the same
//! scenario this module counts the leading output tokens that agree. Pairs on the same model
//! (same weights) are gated: with `agreement: { min_prefix: N }` in the pipeline, a pair that
//! agrees on fewer than N leading tokens (or on fewer than all of them, when fewer than N were
//! generated), or whose engines were given different prompt tokens, is DIVERGENT, and the
//! compared job of the pair has its speed figures marked not comparable.
//!
//! The reference of a pair is the job on the pipeline's `baseline` backend, else on the
//! reference engine ([`crate::backend::BackendKind::is_reference`]: llama.cpp), else the one
//! earlier in the plan: a job's position in the expanded matrix, not the moment it happened to
//! run (verify jobs finish in any order, so bench jobs may too). Pairs on different weights (a
//! GGUF and its dequantized copy) are shown for information and never gated: their outputs may
//! part ways legitimately.

use crate::results::Sample;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Same weights, agreement at or above the threshold.
    Agree,
    /// Same weights, below the threshold or different prompt tokens.
    Divergent,
    /// Same weights, no threshold set: shown, not judged.
    Ungated,
    /// Different weights: shown, not judged.
    DifferentWeights,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgreementRow {
    pub scenario: String,
    /// The reference job (earlier in pipeline order) and the compared one.
    pub reference: String,
    pub other: String,
    pub reference_label: String,
    pub other_label: String,
    pub same_weights: bool,
    pub same_prompt: bool,
    /// Leading output tokens that agree, out of `compared`.
    pub prefix: usize,
    pub compared: usize,
    pub verdict: Verdict,
}

struct Output<'a> {
    job_id: &'a str,
    backend: &'a str,
    model: &'a str,
    digest: Option<&'a str>,
    ids: &'a [u32],
}

fn label(o: &Output<'_>) -> String {
    format!("{} · {}", o.backend, o.model)
}

/// Agreement rows for every pair of jobs that recorded outputs, scenario by scenario, in plan
/// order (`job_order`: the plan's job ids; jobs missing from it follow in the order their samples
/// were written); references first (see the module's text).
pub fn agreement(
    samples: &[Sample],
    min_prefix: Option<usize>,
    baseline: Option<&str>,
    job_order: &[String],
) -> Vec<AgreementRow> {
    let position = |job: &str| {
        job_order
            .iter()
            .position(|j| j == job)
            .unwrap_or(job_order.len())
    };
    let mut by_scenario: BTreeMap<&str, Vec<Output<'_>>> = BTreeMap::new();
    // Scenarios in the order of their first job in the plan.
    let mut order: Vec<(&str, usize)> = Vec::new();
    for s in samples {
        if s.warmup || s.error.is_some() || s.output_ids.is_empty() {
            continue;
        }
        let list = by_scenario.entry(s.scenario.as_str()).or_default();
        if list.iter().any(|o| o.job_id == s.job_id) {
            continue;
        }
        if !order.iter().any(|(sc, _)| *sc == s.scenario) {
            order.push((s.scenario.as_str(), position(&s.job_id)));
        }
        list.push(Output {
            job_id: &s.job_id,
            backend: &s.backend,
            model: &s.model,
            digest: s.prompt_digest.as_deref(),
            ids: &s.output_ids,
        });
    }
    let mut rows = Vec::new();
    let rank = |backend: &str| -> u8 {
        if Some(backend) == baseline {
            0
        } else if crate::backend::BackendKind::parse(backend).is_some_and(|k| k.is_reference()) {
            1
        } else {
            2
        }
    };
    for (scenario, first) in &mut order {
        if let Some(outs) = by_scenario.get(*scenario) {
            *first = outs
                .iter()
                .map(|o| position(o.job_id))
                .min()
                .unwrap_or(*first);
        }
    }
    order.sort_by_key(|(_, first)| *first);
    for (scenario, _) in order {
        let Some(outs) = by_scenario.get_mut(scenario) else {
            continue;
        };
        // Stable: jobs missing from the plan keep the order their samples were written in.
        outs.sort_by_key(|o| (rank(o.backend), position(o.job_id)));
        let outs = &*outs;
        for (i, a) in outs.iter().enumerate() {
            for b in &outs[i + 1..] {
                let compared = a.ids.len().min(b.ids.len());
                let prefix = a.ids.iter().zip(b.ids).take_while(|(x, y)| x == y).count();
                let same_weights = a.model == b.model;
                let same_prompt = a.digest == b.digest;
                let verdict = match (same_weights, min_prefix) {
                    (false, _) => Verdict::DifferentWeights,
                    (true, None) => Verdict::Ungated,
                    (true, Some(n)) => {
                        if same_prompt && prefix >= n.min(compared) {
                            Verdict::Agree
                        } else {
                            Verdict::Divergent
                        }
                    }
                };
                rows.push(AgreementRow {
                    scenario: scenario.to_string(),
                    reference: a.job_id.to_string(),
                    other: b.job_id.to_string(),
                    reference_label: label(a),
                    other_label: label(b),
                    same_weights,
                    same_prompt,
                    prefix,
                    compared,
                    verdict,
                });
            }
        }
    }
    rows
}

/// Jobs whose speed figures are not comparable: the later job of a DIVERGENT pair.
pub fn divergent_jobs(rows: &[AgreementRow]) -> Vec<&str> {
    let mut v: Vec<&str> = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Divergent)
        .map(|r| r.other.as_str())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Sample;

    fn sample(job: &str, backend: &str, model: &str, digest: &str, ids: &[u32]) -> Sample {
        let mut s: Sample = serde_json::from_value(serde_json::json!({
            "job_id": job, "stage": "bench", "backend": backend, "model": model,
            "scenario": "short", "params": {}, "rep": 0, "warmup": false, "simulated": false,
        }))
        .unwrap();
        s.output_ids = ids.to_vec();
        s.prompt_digest = Some(digest.into());
        s
    }

    #[test]
    fn prefixes_and_verdicts() {
        let samples = vec![
            sample("b/llama", "llama_cpp", "q4", "d1", &[1, 2, 3, 4, 5, 6]),
            sample("b/candle", "candle", "q4", "d1", &[1, 2, 3, 9, 5, 6]),
            sample("b/candle-f32", "candle", "f32", "d1", &[1, 2, 7, 4, 5, 6]),
            // A second repetition of the same job is ignored.
            sample("b/candle", "candle", "q4", "d1", &[8, 8, 8]),
        ];
        let rows = agreement(&samples, Some(4), None, &[]);
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].prefix, rows[0].compared), (3, 6));
        assert_eq!(rows[0].verdict, Verdict::Divergent);
        assert_eq!(rows[1].verdict, Verdict::DifferentWeights);
        assert_eq!(rows[1].prefix, 2);
        assert_eq!(divergent_jobs(&rows), vec!["b/candle"]);

        let rows = agreement(&samples, Some(3), None, &[]);
        assert_eq!(rows[0].verdict, Verdict::Agree);
        let rows = agreement(&samples, None, None, &[]);
        assert_eq!(rows[0].verdict, Verdict::Ungated);
        assert!(divergent_jobs(&rows).is_empty());

        // llama.cpp is the reference even when it ran later; a baseline overrides it.
        let later = vec![samples[1].clone(), samples[0].clone()];
        let rows = agreement(&later, Some(4), None, &[]);
        assert_eq!(rows[0].reference, "b/llama");
        let rows = agreement(&later, Some(4), Some("candle"), &[]);
        assert_eq!(rows[0].reference, "b/candle");
    }

    #[test]
    fn references_follow_the_plan_not_the_order_jobs_ran_in() {
        // Two models on one engine: the F32 job ran first (its verify finished first), but the
        // plan lists the Q4 job first, so Q4 is the reference, run after run.
        let mut samples = vec![
            sample("b/candle-f32", "candle", "f32", "d1", &[1, 2, 3]),
            sample("b/candle-q4", "candle", "q4", "d1", &[1, 2, 4]),
        ];
        let mut second = samples[0].clone();
        second.scenario = "other".into();
        second.job_id = "b/candle-f32-other".into();
        samples.insert(0, second.clone());
        let mut q4_other = samples[2].clone();
        q4_other.scenario = "other".into();
        q4_other.job_id = "b/candle-q4-other".into();
        samples.push(q4_other);
        let plan: Vec<String> = [
            "b/candle-q4",
            "b/candle-q4-other",
            "b/candle-f32",
            "b/candle-f32-other",
        ]
        .map(String::from)
        .to_vec();
        let rows = agreement(&samples, Some(2), None, &plan);
        assert_eq!(rows.len(), 2);
        // Scenarios in plan order too: `short` has the plan's first job.
        assert_eq!(
            (rows[0].scenario.as_str(), rows[0].reference.as_str()),
            ("short", "b/candle-q4")
        );
        assert_eq!(
            (rows[1].scenario.as_str(), rows[1].reference.as_str()),
            ("other", "b/candle-q4-other")
        );
        // Without a plan: the order the samples were written.
        let rows = agreement(&samples, Some(2), None, &[]);
        assert_eq!(
            (rows[0].scenario.as_str(), rows[0].reference.as_str()),
            ("other", "b/candle-f32-other")
        );
    }

    #[test]
    fn different_prompts_are_divergent_and_short_outputs_need_all_tokens() {
        let samples = vec![
            sample("b/a", "llama_cpp", "m", "d1", &[1, 2]),
            sample("b/b", "candle", "m", "d2", &[1, 2]),
            sample("b/c", "candle", "m", "d1", &[1, 2]),
        ];
        let rows = agreement(&samples, Some(16), None, &[]);
        assert!(!rows[0].same_prompt);
        assert_eq!(rows[0].verdict, Verdict::Divergent);
        // Two tokens generated, both agree: below 16 but all of them.
        assert_eq!(rows[1].verdict, Verdict::Agree);
    }
}
