//! Templating of pipeline strings (`{{ vars.threads }}`) and redaction of secrets.
//!
//! Pipelines are shared between teams, so their templates are untrusted: no loader (no
//! filesystem), strict undefined values (a typo is an error), bounded fuel and bounded output.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;
use std::collections::BTreeMap;

/// Most instructions one string template may execute.
const FUEL: u64 = 100_000;
/// Longest string a pipeline template may produce.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;

pub struct Templater {
    env: Environment<'static>,
    ctx: minijinja::Value,
}

/// A writer that refuses to grow past a limit, so a runaway template fails instead of filling
/// memory.
pub struct BoundedWriter {
    pub buf: Vec<u8>,
    pub limit: usize,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "template output exceeds {} bytes",
                self.limit
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn sandboxed_env(fuel: u64) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(fuel));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_recursion_limit(64);
    env
}

/// Renders `source` with a sandboxed environment, bounded in fuel and output size.
pub fn render_bounded(
    env: &Environment<'_>,
    source: &str,
    ctx: minijinja::Value,
    limit: usize,
) -> Result<String, String> {
    let tmpl = env.template_from_str(source).map_err(|e| e.to_string())?;
    let mut w = BoundedWriter {
        buf: Vec::new(),
        limit,
    };
    tmpl.render_captured_to(ctx, &mut w)
        .map_err(|e| e.to_string())?;
    String::from_utf8(w.buf).map_err(|e| e.to_string())
}

impl Templater {
    pub fn new(vars: &BTreeMap<String, Value>, env_values: &BTreeMap<String, String>) -> Self {
        let ctx = minijinja::context! {
            vars => minijinja::Value::from(minijinja::value::Serde(vars)),
            env => minijinja::Value::from(minijinja::value::Serde(env_values)),
        };
        Templater {
            env: sandboxed_env(FUEL),
            ctx,
        }
    }

    /// Renders one string. Strings without `{{`/`{%` are returned as they are.
    pub fn render(&self, s: &str) -> Result<String, String> {
        if !s.contains("{{") && !s.contains("{%") {
            return Ok(s.to_string());
        }
        render_bounded(&self.env, s, self.ctx.clone(), MAX_RENDERED_BYTES)
    }

    /// Renders every string inside a value; a string that was a template and renders to a YAML
    /// scalar (`"4"`, `"true"`) becomes that scalar.
    pub fn render_value(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => {
                let out = self.render(s)?;
                if out != *s {
                    scalar_from_str(&out)
                } else {
                    Value::String(out)
                }
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render_value(i))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_value(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// Interprets a command-line or rendered string as a YAML scalar: numbers and booleans become
/// themselves, anything else stays a string.
pub fn scalar_from_str(s: &str) -> Value {
    let t = s.trim();
    if t == "true" {
        return Value::Bool(true);
    }
    if t == "false" {
        return Value::Bool(false);
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() {
            return Value::from(f);
        }
    }
    Value::String(s.to_string())
}

pub use crate::redact::{is_secret_name, Redactor, REDACTED};

#[cfg(test)]
mod tests {
    use super::*;

    fn templater() -> Templater {
        let mut vars = BTreeMap::new();
        vars.insert("threads".to_string(), Value::from(4));
        let mut env = BTreeMap::new();
        env.insert("HF_TOKEN".to_string(), "hf_secret_value".to_string());
        Templater::new(&vars, &env)
    }

    #[test]
    fn renders_vars_and_converts_scalars() {
        let t = templater();
        assert_eq!(
            t.render_value(&Value::from("{{ vars.threads }}")).ok(),
            Some(Value::from(4))
        );
        assert_eq!(t.render("t{{ vars.threads }}").ok().as_deref(), Some("t4"));
        assert_eq!(t.render("plain").ok().as_deref(), Some("plain"));
    }

    #[test]
    fn undefined_is_an_error() {
        let err = templater()
            .render("{{ vars.thread }}")
            .err()
            .unwrap_or_default();
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn runaway_templates_stop() {
        let t = templater();
        let loop_err = t
            .render(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            )
            .err()
            .unwrap_or_default();
        assert!(!loop_err.is_empty());
        let big = t.render("{% for i in range(90000) %}xx{% endfor %}");
        assert!(big.is_err());
    }
}
