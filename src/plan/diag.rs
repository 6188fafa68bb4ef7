//! Located validation errors: file:line:column, the key path, a message, a hint and a snippet.

use serde_saphyr::Spanned;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the error is not tied to a place in the file (e.g. a `--set` override).
    pub line: u64,
    pub column: u64,
    /// Where in the document, e.g. `stages[2].needs[0]`.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
    /// The offending source line, when known.
    pub snippet: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file.display())?;
        }
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(snippet) = &self.snippet {
            let gutter = self.line.to_string();
            write!(f, "\n {gutter} | {snippet}")?;
            let pad = " ".repeat(gutter.len());
            let col = self.column.saturating_sub(1) as usize;
            let caret_pad: String = snippet
                .chars()
                .take(col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n {pad} | {caret_pad}^")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file.
pub struct Diags<'a> {
    pub file: PathBuf,
    pub text: &'a str,
    pub items: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub fn new(file: PathBuf, text: &'a str) -> Self {
        Diags {
            file,
            text,
            items: Vec::new(),
        }
    }

    fn snippet(&self, line: u64) -> Option<String> {
        if line == 0 {
            return None;
        }
        self.text
            .lines()
            .nth(line as usize - 1)
            .map(|l| l.chars().take(200).collect())
    }

    /// An error at the place where `at` was written.
    pub fn at<T>(
        &mut self,
        at: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let line = at.referenced.line();
        let column = at.referenced.column();
        self.at_pos(line, column, key, message)
    }

    pub fn at_pos(
        &mut self,
        line: u64,
        column: u64,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let snippet = self.snippet(line);
        self.items.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            hint: None,
            snippet,
        });
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    /// An error not tied to a place in the file.
    pub fn general(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.at_pos(0, 0, key, message)
    }
}

impl Diagnostic {
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut Self {
        self.hint = Some(hint.into());
        self
    }
}

/// "did you mean" for a misspelt reference.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A hint listing the valid names, with a suggestion when one is close.
pub fn reference_hint(name: &str, kind: &str, candidates: &[&str]) -> String {
    match closest(name, candidates.iter().copied()) {
        Some(c) => format!(
            "did you mean `{c}`? known {kind}: {}",
            candidates.join(", ")
        ),
        None if candidates.is_empty() => format!("no {kind} are defined"),
        None => format!("known {kind}: {}", candidates.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_suggests_near_names_only() {
        assert_eq!(closest("benhc", ["bench", "report"]), Some("bench"));
        assert_eq!(closest("zzzzzz", ["bench", "report"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
