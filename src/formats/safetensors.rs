//! A SafeTensors reader that never trusts the file: the 8-byte header length is bounded and
//! checked against the file; the header is UTF-8 JSON (an object, trailing spaces allowed) with
//! no duplicate keys and no unknown fields; `__metadata__` maps strings to strings; every tensor
//! has a known dtype, a shape whose byte size (checked arithmetic) equals its data range, and
//! the ranges, sorted, cover the data buffer exactly, from 0 to the end of the file. Sharded
//! models: the index lists every shard, every tensor lives in exactly one listed shard, the
//! total size matches, and no shard name escapes the directory. Tensor data is never read.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// Headers larger than this are refused (real ones are a few hundred KB).
pub const MAX_HEADER: u64 = 100 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsError {
    #[error("at byte 0: header length: the file has {size} bytes, fewer than the 8 of the length")]
    TooShort { size: u64 },
    #[error("at byte 0: header length: {len} bytes is more than the {limit}-byte limit")]
    HeaderTooLarge { len: u64, limit: u64 },
    #[error("at byte 0: header length: {len} bytes does not fit in the {size}-byte file")]
    HeaderPastEnd { len: u64, size: u64 },
    #[error("at byte {offset}: header: {message}")]
    BadHeader { offset: u64, message: String },
    #[error("at byte {offset}: header: duplicate key `{key}`")]
    DuplicateKey { offset: u64, key: String },
    #[error("at byte 8: header: tensor `{name}`: {message}")]
    BadTensor { name: String, message: String },
    #[error("at byte {offset}: data: tensor `{name}` {problem}")]
    Layout {
        offset: u64,
        name: String,
        problem: String,
    },
    #[error("{path}: {message}")]
    Shards { path: String, message: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

/// What the report shows about a SafeTensors file or sharded model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub tensor_count: u64,
    pub parameters: u64,
    /// dtype → (tensors, parameters)
    pub dtypes: BTreeMap<String, (u64, u64)>,
    pub metadata: BTreeMap<String, String>,
    pub data_bytes: u64,
}

/// Bits per element of each known dtype.
fn dtype_bits(d: &str) -> Option<u64> {
    Some(match d {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

/// A tensor's bytes in the file (None for a dtype this reader does not know).
pub fn tensor_bytes(t: &TensorInfo) -> Option<u64> {
    let elems = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
    elems
        .checked_mul(dtype_bits(&t.dtype)?)
        .map(|b| b.div_ceil(8))
}

/// A floating-point dtype, which a backend may cast (candle's and MLX's `dtype`).
pub fn is_float(dtype: &str) -> bool {
    matches!(dtype, "F16" | "BF16" | "F32" | "F64")
}

/// A JSON value that remembers key order and refuses duplicate keys at any depth.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool,
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

struct JVisitor;

impl<'de> serde::de::Visitor<'de> for JVisitor {
    type Value = J;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<J, E> {
        Ok(J::Bool)
    }
    fn visit_u64<E>(self, v: u64) -> Result<J, E> {
        Ok(J::Num(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J, E> {
        Ok(J::Num(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<J, E> {
        serde_json::Number::from_f64(v)
            .map(J::Num)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<J, E> {
        Ok(J::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<J, E> {
        Ok(J::Str(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = a.next_element_seed(JSeed)? {
            v.push(x);
        }
        Ok(J::Arr(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
        let mut seen = BTreeSet::new();
        let mut v = Vec::new();
        while let Some(k) = a.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
            }
            v.push((k, a.next_value_seed(JSeed)?));
        }
        Ok(J::Obj(v))
    }
}

struct JSeed;
impl<'de> serde::de::DeserializeSeed<'de> for JSeed {
    type Value = J;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<J, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct Tensor {
    name: String,
    begin: u64,
    end: u64,
}

/// One tensor as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
}

fn parse_header(bytes: &[u8]) -> Result<J, SafetensorsError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SafetensorsError::BadHeader {
        offset: 8 + e.valid_up_to() as u64,
        message: "not UTF-8".into(),
    })?;
    if !text.starts_with('{') {
        return Err(SafetensorsError::BadHeader {
            offset: 8,
            message: "does not start with `{`".into(),
        });
    }
    let trimmed = text.trim_end_matches(' ');
    let mut de = serde_json::Deserializer::from_str(trimmed);
    let v =
        serde::de::DeserializeSeed::deserialize(JSeed, &mut de).and_then(|v| de.end().map(|_| v));
    v.map_err(|e| {
        let msg = e.to_string();
        // serde_json counts columns from 1 on the header's only line (headers have no newlines).
        let offset = 8 + e.column().saturating_sub(1) as u64;
        match msg
            .strip_prefix("duplicate key `")
            .and_then(|r| r.split('`').next())
        {
            Some(k) => SafetensorsError::DuplicateKey {
                offset,
                key: k.to_string(),
            },
            None => SafetensorsError::BadHeader {
                offset,
                message: msg,
            },
        }
    })
}

/// Verifies a header and layout read from `r` (a file of `size` bytes).
///
/// Long on purpose: one linear pass over an untrusted header, each check beside what it reads.
pub fn verify_reader<R: Read>(
    mut r: R,
    size: u64,
) -> Result<(Summary, Vec<TensorInfo>), SafetensorsError> {
    if size < 8 {
        return Err(SafetensorsError::TooShort { size });
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len)
        .map_err(|_| SafetensorsError::TooShort { size })?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(SafetensorsError::HeaderTooLarge {
            len: n,
            limit: MAX_HEADER,
        });
    }
    if n > size - 8 {
        return Err(SafetensorsError::HeaderPastEnd { len: n, size });
    }
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header)
        .map_err(|_| SafetensorsError::HeaderPastEnd { len: n, size })?;
    let J::Obj(entries) = parse_header(&header)? else {
        return Err(SafetensorsError::BadHeader {
            offset: 8,
            message: "not a JSON object".into(),
        });
    };
    let buffer = size - 8 - n;
    let mut summary = Summary::default();
    let mut tensors = Vec::new();
    let mut names = Vec::new();
    for (name, v) in entries {
        if name == "__metadata__" {
            let J::Obj(m) = v else {
                return Err(SafetensorsError::BadHeader {
                    offset: 8,
                    message: "`__metadata__` is not an object".into(),
                });
            };
            for (k, v) in m {
                let J::Str(s) = v else {
                    return Err(SafetensorsError::BadHeader {
                        offset: 8,
                        message: format!("`__metadata__.{k}` is not a string"),
                    });
                };
                summary.metadata.insert(k, s);
            }
            continue;
        }
        let bad = |message: String| SafetensorsError::BadTensor {
            name: name.clone(),
            message,
        };
        if name.is_empty() {
            return Err(bad("empty tensor name".into()));
        }
        let J::Obj(fields) = v else {
            return Err(bad("not an object".into()));
        };
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        for (k, v) in fields {
            match (k.as_str(), v) {
                ("dtype", J::Str(s)) => dtype = Some(s),
                ("shape", J::Arr(a)) => {
                    let dims: Option<Vec<u64>> = a
                        .iter()
                        .map(|d| match d {
                            J::Num(n) => n.as_u64(),
                            _ => None,
                        })
                        .collect();
                    shape = Some(dims.ok_or_else(|| {
                        bad("shape: dimensions must be non-negative integers".into())
                    })?);
                }
                ("data_offsets", J::Arr(a)) => match a.as_slice() {
                    [J::Num(b), J::Num(e)] => match (b.as_u64(), e.as_u64()) {
                        (Some(b), Some(e)) => offsets = Some((b, e)),
                        _ => {
                            return Err(bad(
                                "data_offsets: two non-negative integers expected".into()
                            ))
                        }
                    },
                    _ => return Err(bad("data_offsets: two integers expected".into())),
                },
                (other @ ("dtype" | "shape" | "data_offsets"), _) => {
                    return Err(bad(format!("`{other}` has the wrong type")))
                }
                (other, _) => return Err(bad(format!("unknown field `{other}`"))),
            }
        }
        let dtype = dtype.ok_or_else(|| bad("no dtype".into()))?;
        let shape = shape.ok_or_else(|| bad("no shape".into()))?;
        let (begin, end) = offsets.ok_or_else(|| bad("no data_offsets".into()))?;
        let bits = dtype_bits(&dtype).ok_or_else(|| bad(format!("unknown dtype `{dtype}`")))?;
        let elems = shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        let bytes = elems
            .checked_mul(bits)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| bad(format!("shape {shape:?} × {bits} bits overflows")))?;
        if end < begin {
            return Err(bad(format!(
                "data_offsets [{begin}, {end}] end before they begin"
            )));
        }
        if end - begin != bytes {
            return Err(bad(format!(
                "{dtype} {shape:?} needs {bytes} bytes, data_offsets [{begin}, {end}] give {}",
                end - begin
            )));
        }
        summary.tensor_count += 1;
        summary.parameters = summary.parameters.saturating_add(elems);
        let e = summary.dtypes.entry(dtype.clone()).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.saturating_add(elems);
        names.push(TensorInfo {
            name: name.clone(),
            dtype,
            shape,
        });
        tensors.push(Tensor { name, begin, end });
    }
    // Sorted by offset, the tensors must tile the buffer: no gap, no overlap, nothing after.
    tensors.sort_by_key(|t| (t.begin, t.end));
    let mut at = 0u64;
    for t in &tensors {
        let offset = 8 + n + t.begin;
        if t.begin > at {
            return Err(SafetensorsError::Layout {
                offset,
                name: t.name.clone(),
                problem: format!("starts at {}, leaving a gap after {at}", t.begin),
            });
        }
        if t.begin < at {
            return Err(SafetensorsError::Layout {
                offset,
                name: t.name.clone(),
                problem: format!("starts at {}, overlapping data that ends at {at}", t.begin),
            });
        }
        if t.end > buffer {
            return Err(SafetensorsError::Layout {
                offset,
                name: t.name.clone(),
                problem: format!("ends at {}, past the {buffer}-byte data buffer", t.end),
            });
        }
        at = t.end;
    }
    if at != buffer {
        return Err(SafetensorsError::Layout {
            offset: 8 + n + at,
            name: tensors.last().map(|t| t.name.clone()).unwrap_or_default(),
            problem: format!(
                "is the last, ending at {at}; the file has {} bytes of data after it",
                buffer - at
            ),
        });
    }
    summary.data_bytes = buffer;
    Ok((summary, names))
}

/// Verifies one `.safetensors` file.
pub fn verify_file(path: &Path) -> Result<Summary, SafetensorsError> {
    let io = |e: std::io::Error| SafetensorsError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    verify_reader(std::io::BufReader::new(f), size).map(|(s, _)| s)
}

fn merge(into: &mut Summary, s: Summary) {
    into.tensor_count += s.tensor_count;
    into.parameters = into.parameters.saturating_add(s.parameters);
    into.data_bytes = into.data_bytes.saturating_add(s.data_bytes);
    for (k, (t, p)) in s.dtypes {
        let e = into.dtypes.entry(k).or_insert((0, 0));
        e.0 += t;
        e.1 = e.1.saturating_add(p);
    }
    into.metadata.extend(s.metadata);
}

/// Verifies a model directory: `model.safetensors`, or the shards its
/// `model.safetensors.index.json` lists (every tensor in exactly one listed shard).
pub fn verify_dir(dir: &Path) -> Result<Summary, SafetensorsError> {
    verify_dir_tensors(dir).map(|(s, _)| s)
}

fn verify_file_tensors(path: &Path) -> Result<(Summary, Vec<TensorInfo>), SafetensorsError> {
    let io = |e: std::io::Error| SafetensorsError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    verify_reader(std::io::BufReader::new(f), size)
}

/// [`verify_dir`], also returning every tensor's dtype and shape.
pub fn verify_dir_tensors(dir: &Path) -> Result<(Summary, Vec<TensorInfo>), SafetensorsError> {
    let index = dir.join("model.safetensors.index.json");
    let shards_err = |message: String| SafetensorsError::Shards {
        path: index.display().to_string(),
        message,
    };
    if !index.exists() {
        let single = dir.join("model.safetensors");
        if single.exists() {
            return verify_file_tensors(&single);
        }
        // Any lone *.safetensors file.
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| SafetensorsError::Io {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        return match files.as_slice() {
            [one] => verify_file_tensors(one),
            [] => Err(SafetensorsError::Shards {
                path: dir.display().to_string(),
                message: "no .safetensors file".into(),
            }),
            _ => Err(SafetensorsError::Shards {
                path: dir.display().to_string(),
                message: "several .safetensors files but no model.safetensors.index.json".into(),
            }),
        };
    }
    let text = std::fs::read(&index).map_err(|e| shards_err(e.to_string()))?;
    if text.len() as u64 > MAX_HEADER {
        return Err(shards_err("index larger than 100 MB".into()));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Index {
        #[serde(default)]
        metadata: BTreeMap<String, serde_json::Value>,
        weight_map: BTreeMap<String, String>,
    }
    let idx: Index =
        serde_json::from_slice(&text).map_err(|e| shards_err(format!("not a shard index: {e}")))?;
    let mut shards: BTreeSet<&str> = BTreeSet::new();
    for (tensor, shard) in &idx.weight_map {
        if shard.is_empty()
            || shard.contains('/')
            || shard.contains('\\')
            || shard == ".."
            || shard == "."
        {
            return Err(shards_err(format!(
                "tensor `{tensor}`: shard name `{shard}` escapes the directory"
            )));
        }
        shards.insert(shard);
    }
    let mut total = Summary::default();
    let mut all = Vec::new();
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for shard in &shards {
        let path = dir.join(shard);
        if !path.is_file() {
            return Err(shards_err(format!("shard `{shard}` is listed but missing")));
        }
        let f = std::fs::File::open(&path).map_err(|e| shards_err(format!("{shard}: {e}")))?;
        let size = f
            .metadata()
            .map_err(|e| shards_err(format!("{shard}: {e}")))?
            .len();
        let (s, names) = verify_reader(std::io::BufReader::new(f), size).map_err(|e| {
            SafetensorsError::Shards {
                path: path.display().to_string(),
                message: e.to_string(),
            }
        })?;
        for t in names {
            let n = t.name.clone();
            all.push(t);
            if let Some(other) = found.insert(n.clone(), shard.to_string()) {
                return Err(shards_err(format!(
                    "tensor `{n}` is in both `{other}` and `{shard}`"
                )));
            }
            match idx.weight_map.get(&n) {
                Some(listed) if listed == shard => {}
                Some(listed) => {
                    return Err(shards_err(format!(
                        "tensor `{n}` is in `{shard}`, the index says `{listed}`"
                    )))
                }
                None => {
                    return Err(shards_err(format!(
                        "tensor `{n}` in `{shard}` is not in the index"
                    )))
                }
            }
        }
        merge(&mut total, s);
    }
    if let Some(missing) = idx.weight_map.keys().find(|t| !found.contains_key(*t)) {
        return Err(shards_err(format!(
            "tensor `{missing}` is listed in `{}` but not there",
            idx.weight_map[missing]
        )));
    }
    if let Some(ts) = idx.metadata.get("total_size") {
        let want = ts
            .as_u64()
            .ok_or_else(|| shards_err(format!("metadata.total_size {ts} is not a byte count")))?;
        if want != total.data_bytes {
            return Err(shards_err(format!(
                "metadata.total_size is {want}, the shards hold {} bytes of tensor data",
                total.data_bytes
            )));
        }
    }
    Ok((total, all))
}

#[cfg(test)]
mod tests;
