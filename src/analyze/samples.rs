//! `samples.parquet`: every line of `samples.jsonl` as one row, for other tools (pandas, polars,
//! DuckDB) and for `minerva compare`, which reads its metric columns instead of re-parsing JSON.
//!
//! Columns: the sample's identity (`job_id`, `stage`, `backend`, `model`, `scenario`, `params`
//! as one string, and each param flattened to a `param.<name>` string column), `rep`, `warmup`,
//! `simulated`, `kind` (`run`, `request` or `load_step`), `failed` and `error_kind`, every
//! per-sample metric, the server request and load-step fields, and `token_ms`: the token
//! timestamps as a list column.

use super::frame::{is_failed, metric_value, write_parquet};
use super::{AnalyzeError, Metric};
use crate::plan::param_string;
use crate::results::Sample;
use polars::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;

/// Per-sample metrics, each a column named by [`Metric::column`].
pub const SAMPLE_METRICS: [Metric; 9] = [
    Metric::PpTps,
    Metric::TgTps,
    Metric::TtftMs,
    Metric::TpotMs,
    Metric::E2eMs,
    Metric::LoadMs,
    Metric::PeakRssMb,
    Metric::TokenizeMs,
    Metric::SampleMs,
];

/// What a line of `samples.jsonl` is.
pub fn sample_kind(s: &Sample) -> &'static str {
    if s.load.is_some() {
        "load_step"
    } else if s.request.is_some() {
        "request"
    } else {
        "run"
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The frame of `samples.parquet`: one row per sample, in file order.
pub fn samples_frame(samples: &[Sample]) -> PolarsResult<DataFrame> {
    let n = samples.len();
    let str_col = |name: &str, f: &dyn Fn(&Sample) -> String| {
        Column::new(name.into(), samples.iter().map(f).collect::<Vec<_>>())
    };
    let mut cols = vec![
        str_col("job_id", &|s| s.job_id.clone()),
        str_col("stage", &|s| s.stage.clone()),
        str_col("backend", &|s| s.backend.clone()),
        str_col("model", &|s| s.model.clone()),
        str_col("scenario", &|s| s.scenario.clone()),
        str_col("params", &|s| param_string(&s.params)),
    ];
    let keys: BTreeSet<&String> = samples.iter().flat_map(|s| s.params.keys()).collect();
    for k in keys {
        cols.push(Column::new(
            format!("param.{k}").into(),
            samples
                .iter()
                .map(|s| s.params.get(k).map(json_text))
                .collect::<Vec<_>>(),
        ));
    }
    cols.push(Column::new(
        "rep".into(),
        samples.iter().map(|s| s.rep).collect::<Vec<_>>(),
    ));
    let bool_col = |name: &str, f: &dyn Fn(&Sample) -> bool| {
        Column::new(name.into(), samples.iter().map(f).collect::<Vec<_>>())
    };
    cols.push(bool_col("warmup", &|s| s.warmup));
    cols.push(bool_col("simulated", &|s| s.simulated));
    cols.push(str_col("kind", &|s| sample_kind(s).to_string()));
    cols.push(bool_col("failed", &is_failed));
    cols.push(Column::new(
        "error_kind".into(),
        samples
            .iter()
            .map(|s| {
                s.error
                    .as_ref()
                    .map(|e| json_text(&serde_json::json!(e.kind)))
                    .or_else(|| {
                        s.request
                            .as_ref()
                            .and_then(|r| r.failure.as_ref())
                            .map(|f| f.kind.as_str().to_string())
                    })
            })
            .collect::<Vec<_>>(),
    ));
    let u64_col = |name: &str, f: &dyn Fn(&Sample) -> Option<u64>| {
        Column::new(name.into(), samples.iter().map(f).collect::<Vec<_>>())
    };
    cols.push(u64_col("prompt_tokens", &|s| s.prompt_tokens));
    cols.push(u64_col("output_tokens", &|s| s.output_tokens));
    for m in SAMPLE_METRICS {
        cols.push(Column::new(
            m.column().into(),
            samples
                .iter()
                .map(|s| metric_value(s, m))
                .collect::<Vec<_>>(),
        ));
    }
    let f64_col = |name: &str, f: &dyn Fn(&Sample) -> Option<f64>| {
        Column::new(name.into(), samples.iter().map(f).collect::<Vec<_>>())
    };
    cols.push(u64_col("request_step", &|s| {
        s.request.as_ref().map(|r| u64::from(r.step))
    }));
    cols.push(f64_col("request_intended_ms", &|s| {
        s.request.as_ref().map(|r| r.intended_ms.0)
    }));
    cols.push(f64_col("request_sent_ms", &|s| {
        s.request.as_ref().map(|r| r.sent_ms.0)
    }));
    cols.push(u64_col("load_step", &|s| {
        s.load.as_ref().map(|l| u64::from(l.step))
    }));
    cols.push(f64_col("load_completed_rps", &|s| {
        s.load.as_ref().map(|l| l.achieved_rps)
    }));
    cols.push(f64_col("load_output_tps", &|s| {
        s.load.as_ref().map(|l| l.output_tps)
    }));
    cols.push(f64_col("load_goodput_rps", &|s| {
        s.load.as_ref().and_then(|l| l.goodput).map(|g| g.1)
    }));
    let total: usize = samples.iter().map(|s| s.token_ms.len()).sum();
    let mut tokens = ListPrimitiveChunkedBuilder::<Float64Type>::new(
        "token_ms".into(),
        n,
        total,
        DataType::Float64,
    );
    for s in samples {
        let ts: Vec<f64> = s.token_ms.iter().map(|t| t.0).collect();
        tokens.append_slice(&ts);
    }
    cols.push(tokens.finish().into_series().into_column());
    DataFrame::new(n, cols)
}

/// Writes `samples.parquet` atomically.
pub fn write_samples(samples: &[Sample], path: &Path) -> Result<(), AnalyzeError> {
    write_parquet(&mut samples_frame(samples)?, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Millis;

    #[test]
    fn one_row_per_line_with_params_flattened_and_token_lists() {
        let mut a: Sample = serde_json::from_value(serde_json::json!({
            "job_id": "b/simulated/m/s", "stage": "b", "backend": "simulated", "model": "m",
            "scenario": "s", "params": {"threads": 2, "dtype": "f16"}, "rep": 0,
            "warmup": false, "simulated": true, "tg_tps": 100.0
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        a.token_ms = vec![Millis(10.0), Millis(20.0), Millis(40.0)];
        let mut b = a.clone();
        b.rep = 1;
        b.params.remove("dtype");
        b.token_ms.clear();
        let df = samples_frame(&[a, b]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(df.height(), 2);
        let threads = df.column("param.threads").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(threads.str().map(|c| c.get(0)).ok().flatten(), Some("2"));
        let dtype = df.column("param.dtype").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dtype.str().map(|c| c.get(1)).ok().flatten(), None);
        let tpot = df.column("tpot_ms").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tpot.f64().map(|c| c.get(0)).ok().flatten(), Some(15.0));
        let tokens = df.column("token_ms").unwrap_or_else(|e| panic!("{e}"));
        let first = tokens.list().map(|l| l.get_as_series(0)).ok().flatten();
        assert_eq!(first.map(|s| s.len()), Some(3));
    }
}
