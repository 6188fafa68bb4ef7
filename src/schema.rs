//! JSON Schemas of pipeline and scenario files, generated from the types that parse them
//! (`spec`) and the backends' typed params (`backend`), so an editor checks and completes what
//! minerva itself accepts. `minerva schema` prints them; docs/pipeline.schema.json and
//! docs/scenario.schema.json are the checked-in copies (a test fails when they are stale).
//!
//! The schema checks structure and types; what needs the whole file (references between
//! names, grants, paths, cycles) stays with `minerva validate`.

use crate::backend::BackendKind;
use crate::spec::{PipelineSpec, ScenarioSpec};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Which file a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    Pipeline,
    Scenario,
}

/// The schema of `kind`, pretty-printed with a final newline (the checked-in form).
pub fn schema_text(kind: SchemaKind) -> String {
    let v = match kind {
        SchemaKind::Pipeline => pipeline_schema(),
        SchemaKind::Scenario => scenario_schema(),
    };
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12()
}

/// The scenario file's schema.
pub fn scenario_schema() -> Value {
    let mut root = settings()
        .into_generator()
        .into_root_schema_for::<ScenarioSpec>()
        .to_value();
    if let Some(o) = root.as_object_mut() {
        o.insert("title".into(), json!("minerva scenario"));
    }
    root
}

/// The pipeline file's schema: the spec's types, with the matrix's `params` spelled out from
/// every backend's typed params (a param of several backends takes any of their types; a list
/// of values is an axis; a template string renders to a value).
pub fn pipeline_schema() -> Value {
    let mut generator = settings().into_generator();
    // Each backend's params in `$defs`, and, per param name, the backends that have it.
    let mut by_param: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for kind in BackendKind::all() {
        let r = kind.params_schema(&mut generator).to_value();
        let Some(def) = r.get("$ref").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        for name in kind.known_params() {
            by_param
                .entry(name)
                .or_default()
                .push(format!("{def}/properties/{name}"));
        }
    }
    let template = generator
        .subschema_for::<crate::spec::Template>()
        .to_value();
    let mut root = generator.into_root_schema_for::<PipelineSpec>().to_value();

    let mut props = Map::new();
    for (name, refs) in by_param {
        let mut one: Vec<Value> = refs.into_iter().map(|r| json!({ "$ref": r })).collect();
        one.push(template.clone());
        let value = json!({ "anyOf": one });
        props.insert(
            name.to_string(),
            json!({ "anyOf": [value, { "type": "array", "items": value }] }),
        );
    }
    let params = json!({
        "description": "Parameter axes: a list is an axis, a scalar one value for every job. \
                        Each backend accepts only its own params.",
        "type": "object",
        "properties": props,
        "additionalProperties": false,
    });
    if let Some(slot) = root.pointer_mut("/$defs/MatrixSpec/properties/params") {
        *slot = params;
    }
    // Backend names are a closed set.
    if let Some(slot) = root.pointer_mut("/$defs/MatrixSpec/properties/backend/items") {
        let names: Vec<&str> = BackendKind::all()
            .flat_map(|k| std::iter::once(k.name()).chain(k.aliases().iter().copied()))
            .collect();
        *slot = json!({ "enum": names });
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_param_is_in_the_pipeline_schema() {
        let s = pipeline_schema();
        let params = s
            .pointer("/$defs/MatrixSpec/properties/params/properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for kind in BackendKind::all() {
            for name in kind.known_params() {
                assert!(params.contains_key(*name), "{kind}.{name}");
            }
        }
        assert!(s.pointer("/$defs/LlamaParams/properties/threads").is_some());
    }
}
