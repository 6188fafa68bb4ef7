//! Typed backend parameters. Each backend declares its params as a serde struct
//! (`deny_unknown_fields`) with a `check` for ranges and required keys; the plan runs the same
//! parse and check on every bench job before anything runs (so `threads: abc` exits 2 at
//! `validate`, located), and the worker parses the same struct again to run the job.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;

/// A job's params as the plan holds them: name → value.
pub type ParamMap = BTreeMap<String, Value>;

/// A bad parameter value: the key path inside the job's params (`threads`, `load.rate`), what
/// is wrong, and optionally what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl ParamProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ParamProblem {
        ParamProblem {
            key: key.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> ParamProblem {
        self.hint = Some(hint.into());
        self
    }

    /// The parameter at the top of the key path (`load` of `load.rate`).
    pub fn param(&self) -> &str {
        self.key.split(['.', '[']).next().unwrap_or(&self.key)
    }
}

impl From<ParamProblem> for super::BackendError {
    fn from(p: ParamProblem) -> Self {
        super::BackendError::Param {
            name: p.key,
            message: match p.hint {
                Some(h) => format!("{} ({h})", p.message),
                None => p.message,
            },
        }
    }
}

/// A backend's typed params: parsed by serde, then checked for what types cannot say.
pub trait TypedParams: DeserializeOwned + Sized {
    /// Ranges, required keys and combinations; empty when the params are usable.
    fn check(&self) -> Vec<ParamProblem>;
}

/// Parses `params` into `T` and checks it: the first problem, or the params.
pub fn parse<T: TypedParams>(params: &ParamMap) -> Result<T, ParamProblem> {
    let p: T = from_map(params)?;
    match p.check().into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(p),
    }
}

/// Every problem of `params` as `T`. Each key is parsed on its own first (every field of a
/// params struct is optional), so one bad value hides neither the next nor the checks of the
/// keys that did parse.
pub fn problems<T: TypedParams>(params: &BTreeMap<String, Value>) -> Vec<ParamProblem> {
    let mut out = Vec::new();
    let mut good = serde_json::Map::new();
    for (k, v) in params {
        let one = serde_json::Map::from_iter([(k.clone(), v.clone())]);
        match from_value::<T>(Value::Object(one)) {
            Ok(_) => {
                good.insert(k.clone(), v.clone());
            }
            Err(e) => out.push(e),
        }
    }
    match from_value::<T>(Value::Object(good)) {
        Ok(p) => out.extend(p.check()),
        Err(e) => out.push(e),
    }
    out
}

/// Deserializes `params` into `T`, unchecked (see [`parse`]).
pub fn from_map<T: DeserializeOwned>(params: &ParamMap) -> Result<T, ParamProblem> {
    from_value(Value::Object(
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    ))
}

/// Deserializes `v`, naming the key path of the first error.
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, ParamProblem> {
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names an unknown key in its message; the path may end at its parent.
        let key = match unknown_field(&inner) {
            Some(field) if path == "." => field.to_string(),
            Some(field) if !path.ends_with(field) => format!("{path}.{field}"),
            _ => path,
        };
        ParamProblem::new(key, inner)
    })
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// `threads`: 1 to 1024.
pub fn check_threads(threads: Option<u32>, out: &mut Vec<ParamProblem>) {
    if let Some(t) = threads {
        if !(1..=1024).contains(&t) {
            out.push(ParamProblem::new(
                "threads",
                format!("expected 1 to 1024, found {t}"),
            ));
        }
    }
}

/// A floating-point type a `dtype` param names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    F32,
    Bf16,
    F16,
}

/// A yes/no param that also takes llama-bench's 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl schemars::JsonSchema for Flag {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Flag".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "true or false (or llama-bench's 1 and 0)",
            "oneOf": [{ "type": "boolean" }, { "type": "integer", "enum": [0, 1] }]
        })
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Flag, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, 0 or 1")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Flag, E> {
                Ok(Flag(b))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Flag, E> {
                match n {
                    0 | 1 => Ok(Flag(n == 1)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(n), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Flag, E> {
                match n {
                    0 | 1 => Ok(Flag(n == 1)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Signed(n), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A finite number at or above `min` (exclusive when `strict`).
pub fn check_number(
    key: &str,
    v: Option<f64>,
    min: f64,
    strict: bool,
    out: &mut Vec<ParamProblem>,
) {
    if let Some(x) = v {
        let ok = x.is_finite() && if strict { x > min } else { x >= min };
        if !ok {
            let what = match (strict, min == 0.0) {
                (true, true) => "a positive number".to_string(),
                (false, true) => "a non-negative number".to_string(),
                (true, false) => format!("a number above {min}"),
                (false, false) => format!("a number of at least {min}"),
            };
            out.push(ParamProblem::new(
                key,
                format!("expected {what}, found {x}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        rate: Option<f64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        threads: Option<u32>,
        #[allow(dead_code)]
        load: Option<Inner>,
        flag: Option<Flag>,
        dtype: Option<FloatType>,
    }

    impl TypedParams for Outer {
        fn check(&self) -> Vec<ParamProblem> {
            let mut out = Vec::new();
            check_threads(self.threads, &mut out);
            out
        }
    }

    fn params(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn problems_name_their_key_path() {
        let p = problems::<Outer>(&params(serde_json::json!({"threads": "abc"})));
        assert_eq!(p[0].key, "threads");
        assert!(p[0].message.contains("expected u32"), "{p:?}");
        let p = problems::<Outer>(&params(serde_json::json!({"load": {"concurency": 4}})));
        assert_eq!(p[0].key, "load.concurency");
        assert!(p[0].message.contains("unknown field `concurency`"), "{p:?}");
        let p = problems::<Outer>(&params(serde_json::json!({"nope": 1})));
        assert_eq!(p[0].key, "nope");
        assert_eq!(p[0].param(), "nope");
        let p = problems::<Outer>(&params(serde_json::json!({"threads": 0})));
        assert_eq!(p[0].message, "expected 1 to 1024, found 0");
        let p = problems::<Outer>(&params(serde_json::json!({"dtype": "f99"})));
        assert_eq!(p[0].key, "dtype");
        assert!(p[0].message.contains("unknown variant `f99`"), "{p:?}");
        let p = problems::<Outer>(&params(serde_json::json!({"flag": 2})));
        assert!(p[0].message.contains("true, false, 0 or 1"), "{p:?}");
        let ok: Outer = parse(&params(serde_json::json!({"flag": 1, "dtype": "bf16"}))).unwrap();
        assert_eq!(
            (ok.flag, ok.dtype),
            (Some(Flag(true)), Some(FloatType::Bf16))
        );
    }
}
