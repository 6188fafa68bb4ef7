//! A GGUF (v2, v3) header reader that never trusts the file.
//!
//! Every count and length is checked against the bytes that remain before anything is
//! allocated; only known value and tensor types are accepted; tensor data ranges must be
//! aligned, inside the file, in order, without overlap or gap (as llama.cpp requires). The
//! tensor data itself is never read: a 5 GB file verifies in milliseconds.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read};
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_ALIGNMENT: u64 = 1 << 16;
const MAX_TENSOR_NAME: usize = 63;
/// Longest string a header may hold (a chat template is a few KB; a vocabulary entry a few bytes).
const MAX_STRING: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    #[error("at byte {offset}: {field}: unexpected end of file")]
    Truncated { offset: u64, field: String },
    #[error("at byte 0: magic: expected \"GGUF\", found {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("at byte 4: version: {version} is not supported (2 and 3 are)")]
    BadVersion { version: u32 },
    #[error(
        "at byte {offset}: {field}: count {count} cannot fit in the {remaining} bytes that remain"
    )]
    CountTooLarge {
        offset: u64,
        field: String,
        count: u64,
        remaining: u64,
    },
    #[error("at byte {offset}: {field}: unknown value type {value_type}")]
    UnknownValueType {
        offset: u64,
        field: String,
        value_type: u32,
    },
    #[error("at byte {offset}: {field}: arrays of arrays are not allowed")]
    NestedArray { offset: u64, field: String },
    #[error("at byte {offset}: {field}: bool must be 0 or 1, found {value}")]
    BadBool {
        offset: u64,
        field: String,
        value: u8,
    },
    #[error("at byte {offset}: {field}: {reason}")]
    BadKey {
        offset: u64,
        field: String,
        reason: String,
    },
    #[error("at byte {offset}: key `{key}` appears twice")]
    DuplicateKey { offset: u64, key: String },
    #[error("at byte {offset}: general.alignment: {reason}")]
    BadAlignment { offset: u64, reason: String },
    #[error("at byte {offset}: tensor `{name}`: {reason}")]
    BadTensor {
        offset: u64,
        name: String,
        reason: String,
    },
    #[error("at byte {offset}: tensor `{name}`: unknown ggml type {ggml_type}")]
    UnknownTensorType {
        offset: u64,
        name: String,
        ggml_type: u32,
    },
    #[error("tensor `{name}`: data at {start}..{end} {reason}")]
    BadDataRange {
        name: String,
        start: u64,
        end: u64,
        reason: String,
    },
    #[error("cannot read the file: {0}")]
    Io(String),
}

/// (name, elements per block, bytes per block) by ggml type id.
fn ggml_type(t: u32) -> Option<(&'static str, u64, u64)> {
    Some(match t {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    })
}

/// A metadata value, kept small: arrays keep their length and only their first few items.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    Array { len: u64, head: Vec<MetaValue> },
}

impl MetaValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GgufSummary {
    pub version: u32,
    pub file_size: u64,
    pub tensor_count: u64,
    pub architecture: Option<String>,
    pub name: Option<String>,
    pub parameters: u64,
    pub context_length: Option<u64>,
    pub vocab_size: Option<u64>,
    pub alignment: u64,
    pub data_offset: u64,
    /// ggml type → (tensors, bytes).
    pub quantization: BTreeMap<String, (u64, u64)>,
    /// Tensor bytes one generated token reads: every tensor, except that with a separate
    /// `output.weight` the token embeddings are only gathered (one row), not read whole.
    pub weight_bytes_per_token: u64,
    /// K and V bytes one cached position holds, with llama.cpp's default f16 cache:
    /// 2 × layers × KV heads × head size × 2 bytes (None when the metadata lacks them).
    pub kv_bytes_per_position: Option<u64>,
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub metadata: BTreeMap<String, MetaValue>,
}

impl GgufSummary {
    /// The dominant quantization by bytes, e.g. "Q4_1".
    pub fn main_type(&self) -> Option<&str> {
        self.quantization
            .iter()
            .max_by_key(|(_, (_, bytes))| *bytes)
            .map(|(t, _)| t.as_str())
    }
}

struct Reader<R> {
    r: R,
    pos: u64,
    size: u64,
}

impl<R: Read> Reader<R> {
    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }
    fn bytes<const N: usize>(&mut self, field: &str) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        if self.remaining() < N as u64 {
            return Err(GgufError::Truncated {
                offset: self.pos,
                field: field.into(),
            });
        }
        self.r
            .read_exact(&mut b)
            .map_err(|_| GgufError::Truncated {
                offset: self.pos,
                field: field.into(),
            })?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u8(&mut self, f: &str) -> Result<u8, GgufError> {
        Ok(self.bytes::<1>(f)?[0])
    }
    fn u32(&mut self, f: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes(f)?))
    }
    fn u64(&mut self, f: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes(f)?))
    }
    /// A length-prefixed string; the length is checked before allocating.
    fn string_bytes(&mut self, field: &str) -> Result<Vec<u8>, GgufError> {
        let at = self.pos;
        let len = self.u64(field)?;
        if len > self.remaining() || len > MAX_STRING {
            return Err(GgufError::CountTooLarge {
                offset: at,
                field: format!("{field} (string length)"),
                count: len,
                remaining: self.remaining(),
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| GgufError::Truncated {
                offset: self.pos,
                field: field.into(),
            })?;
        self.pos += len;
        Ok(buf)
    }
    fn skip_string(&mut self, field: &str) -> Result<(), GgufError> {
        let at = self.pos;
        let len = self.u64(field)?;
        if len > self.remaining() {
            return Err(GgufError::CountTooLarge {
                offset: at,
                field: format!("{field} (string length)"),
                count: len,
                remaining: self.remaining(),
            });
        }
        let copied = std::io::copy(&mut (&mut self.r).take(len), &mut std::io::sink())
            .map_err(|e| GgufError::Io(e.to_string()))?;
        if copied != len {
            return Err(GgufError::Truncated {
                offset: self.pos,
                field: field.into(),
            });
        }
        self.pos += len;
        Ok(())
    }

    fn scalar(&mut self, t: u32, field: &str) -> Result<MetaValue, GgufError> {
        let at = self.pos;
        Ok(match t {
            0 => MetaValue::Int(i128::from(self.u8(field)?)),
            1 => MetaValue::Int(i128::from(self.u8(field)? as i8)),
            2 => MetaValue::Int(i128::from(u16::from_le_bytes(self.bytes(field)?))),
            3 => MetaValue::Int(i128::from(i16::from_le_bytes(self.bytes(field)?))),
            4 => MetaValue::Int(i128::from(self.u32(field)?)),
            5 => MetaValue::Int(i128::from(i32::from_le_bytes(self.bytes(field)?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.bytes(field)?))),
            7 => match self.u8(field)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                value => {
                    return Err(GgufError::BadBool {
                        offset: at,
                        field: field.into(),
                        value,
                    })
                }
            },
            8 => MetaValue::Str(String::from_utf8_lossy(&self.string_bytes(field)?).into_owned()),
            10 => MetaValue::Int(i128::from(self.u64(field)?)),
            11 => MetaValue::Int(i128::from(i64::from_le_bytes(self.bytes(field)?))),
            12 => MetaValue::Float(f64::from_le_bytes(self.bytes(field)?)),
            other => {
                return Err(GgufError::UnknownValueType {
                    offset: at,
                    field: field.into(),
                    value_type: other,
                })
            }
        })
    }

    /// Smallest encoded size of one value of type `t` (for count checks).
    fn min_size(t: u32) -> u64 {
        match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            _ => 1,
        }
    }

    fn value(&mut self, t: u32, field: &str) -> Result<MetaValue, GgufError> {
        if t != 9 {
            return self.scalar(t, field);
        }
        let at = self.pos;
        let elem = self.u32(field)?;
        if elem == 9 {
            return Err(GgufError::NestedArray {
                offset: at,
                field: field.into(),
            });
        }
        if !matches!(elem, 0..=8 | 10..=12) {
            return Err(GgufError::UnknownValueType {
                offset: at,
                field: field.into(),
                value_type: elem,
            });
        }
        let count_at = self.pos;
        let count = self.u64(field)?;
        if count
            .checked_mul(Self::min_size(elem))
            .is_none_or(|b| b > self.remaining())
        {
            return Err(GgufError::CountTooLarge {
                offset: count_at,
                field: format!("{field} (array length)"),
                count,
                remaining: self.remaining(),
            });
        }
        let mut head = Vec::new();
        for i in 0..count {
            if i < 8 {
                head.push(self.scalar(elem, field)?);
            } else if elem == 8 {
                self.skip_string(field)?;
            } else {
                self.scalar(elem, field)?;
            }
        }
        Ok(MetaValue::Array { len: count, head })
    }
}

/// Template constructs that have no business in a chat template (sandbox escapes).
fn suspicious_template(t: &str) -> Option<&'static str> {
    const PATTERNS: [(&str, &str); 8] = [
        ("__class__", "attribute access to a dunder name"),
        ("__globals__", "attribute access to a dunder name"),
        ("__builtins__", "attribute access to a dunder name"),
        ("__subclasses__", "attribute access to a dunder name"),
        ("__init__", "attribute access to a dunder name"),
        ("__import__", "an import-like payload"),
        ("import os", "an import-like payload"),
        ("subprocess", "an import-like payload"),
    ];
    PATTERNS
        .iter()
        .find(|(p, _)| t.contains(p))
        .map(|(_, why)| *why)
}

/// Verifies a GGUF file's header and layout (no tensor data is read).
pub fn verify_file(path: &Path) -> Result<GgufSummary, GgufError> {
    let f = std::fs::File::open(path).map_err(|e| GgufError::Io(e.to_string()))?;
    let size = f
        .metadata()
        .map_err(|e| GgufError::Io(e.to_string()))?
        .len();
    verify_reader(BufReader::with_capacity(1 << 16, f), size)
}

/// Verifies GGUF bytes from any reader of a `size`-byte file.
///
/// Long on purpose: one linear pass over an untrusted file, each check beside the bytes it reads
/// (split, the offsets and bounds would travel between functions).
pub fn verify_reader<R: Read>(r: R, size: u64) -> Result<GgufSummary, GgufError> {
    let mut r = Reader { r, pos: 0, size };
    let magic = r
        .bytes::<4>("magic")
        .map_err(|_| GgufError::BadMagic { found: [0; 4] })?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = r.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::BadVersion { version });
    }
    let tc_at = r.pos;
    let tensor_count = r.u64("tensor_count")?;
    let kv_at = r.pos;
    let kv_count = r.u64("kv_count")?;
    // A tensor info takes at least 8 (name) + 4 + 8 + 4 + 8 bytes; a kv at least 8 + 4 + 1.
    if tensor_count
        .checked_mul(32)
        .is_none_or(|b| b > r.remaining())
    {
        return Err(GgufError::CountTooLarge {
            offset: tc_at,
            field: "tensor_count".into(),
            count: tensor_count,
            remaining: r.remaining(),
        });
    }
    if kv_count.checked_mul(13).is_none_or(|b| b > r.remaining()) {
        return Err(GgufError::CountTooLarge {
            offset: kv_at,
            field: "kv_count".into(),
            count: kv_count,
            remaining: r.remaining(),
        });
    }

    let mut metadata = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..kv_count {
        let at = r.pos;
        let key_bytes = r.string_bytes(&format!("kv[{i}].key"))?;
        let key = String::from_utf8(key_bytes).map_err(|_| GgufError::BadKey {
            offset: at,
            field: format!("kv[{i}].key"),
            reason: "key is not UTF-8".into(),
        })?;
        if key.is_empty() {
            return Err(GgufError::BadKey {
                offset: at,
                field: format!("kv[{i}].key"),
                reason: "key is empty".into(),
            });
        }
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey { offset: at, key });
        }
        let type_at = r.pos;
        let t = r.u32(&key)?;
        let value = r.value(t, &key)?;
        if key == "general.alignment" {
            let a = match (t, &value) {
                (4, MetaValue::Int(a)) => *a as u64,
                _ => {
                    return Err(GgufError::BadAlignment {
                        offset: type_at,
                        reason: format!("must be a u32, found value type {t}"),
                    })
                }
            };
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(GgufError::BadAlignment {
                    offset: type_at,
                    reason: format!("{a} is not a power of two up to {MAX_ALIGNMENT}"),
                });
            }
            alignment = a;
        }
        if key == "tokenizer.chat_template" {
            if let Some(why) = value.as_str().and_then(suspicious_template) {
                warnings.push(format!(
                    "tokenizer.chat_template contains {why}; it is never rendered by verify"
                ));
            }
        }
        metadata.insert(key, value);
    }

    // Tensor records, kept compactly (names in one arena, no dimensions): memory stays within
    // a small multiple of the header's own bytes, whatever the file announces.
    let mut tensors: Vec<Rec> = Vec::with_capacity(tensor_count.min(1 << 16) as usize);
    let mut arena = String::new();
    let mut hashes = HashSet::new();
    for i in 0..tensor_count {
        let at = r.pos;
        let name_bytes = r.string_bytes(&format!("tensor[{i}].name"))?;
        let name = String::from_utf8(name_bytes).map_err(|_| GgufError::BadTensor {
            offset: at,
            name: format!("#{i}"),
            reason: "name is not UTF-8".into(),
        })?;
        let bad = |reason: String| GgufError::BadTensor {
            offset: at,
            name: name.clone(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_TENSOR_NAME {
            return Err(bad(format!("name must be 1 to {MAX_TENSOR_NAME} bytes")));
        }
        let h = {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = NAME_HASH.build_hasher();
            hasher.write(name.as_bytes());
            hasher.finish()
        };
        if !hashes.insert(h) && tensors.iter().any(|t| t.name(&arena) == name) {
            return Err(bad("name appears twice".into()));
        }
        let n_dims = r.u32(&name)?;
        if !(1..=4).contains(&n_dims) {
            return Err(bad(format!("{n_dims} dimensions (1 to 4 allowed)")));
        }
        let mut dims = [0u64; 4];
        for d in dims.iter_mut().take(n_dims as usize) {
            *d = r.u64(&name)?;
            if *d > i64::MAX as u64 {
                return Err(bad(format!("dimension {d} is negative as int64")));
            }
        }
        let dims = &dims[..n_dims as usize];
        let type_at = r.pos;
        let t = r.u32(&name)?;
        let Some((type_name, block, type_size)) = ggml_type(t) else {
            return Err(GgufError::UnknownTensorType {
                offset: type_at,
                name,
                ggml_type: t,
            });
        };
        let offset = r.u64(&name)?;
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("element count of {dims:?} overflows")))?;
        if dims[0] % block != 0 {
            return Err(bad(format!(
                "row length {} is not a multiple of {type_name}'s block of {block}",
                dims[0]
            )));
        }
        let bytes = (elements / block)
            .checked_mul(type_size)
            .ok_or_else(|| bad("byte size overflows".into()))?;
        let start = arena.len() as u32;
        arena.push_str(&name);
        tensors.push(Rec {
            name: (start, name.len() as u32),
            ggml_type: t,
            offset,
            elements,
            bytes,
        });
    }

    // Data section: starts at the next multiple of the alignment.
    let data_offset = r.pos.div_ceil(alignment) * alignment;
    let mut expected = 0u64;
    let mut parameters = 0u64;
    let mut quantization: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in &tensors {
        let type_name = ggml_type(t.ggml_type).map_or("?", |(n, _, _)| n);
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.bytes));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(GgufError::BadDataRange {
                name: t.name(&arena).to_string(),
                start: t.offset,
                end: u64::MAX,
                reason: "overflows".into(),
            });
        };
        let range_err = |reason: String| GgufError::BadDataRange {
            name: t.name(&arena).to_string(),
            start,
            end,
            reason,
        };
        if t.offset % alignment != 0 {
            return Err(range_err(format!("is not aligned to {alignment} bytes")));
        }
        if t.offset < expected {
            return Err(range_err(format!(
                "overlaps the previous tensor (expected offset {expected})"
            )));
        }
        if t.offset > expected {
            return Err(range_err(format!(
                "leaves a gap after the previous tensor (expected offset {expected})"
            )));
        }
        if end > size {
            return Err(range_err(format!("is outside the {size}-byte file")));
        }
        expected = t.offset + t.bytes.div_ceil(alignment) * alignment;
        parameters = parameters.saturating_add(t.elements);
        let q = quantization.entry(type_name.to_string()).or_default();
        q.0 += 1;
        q.1 += t.bytes;
    }
    let data_end = tensors
        .last()
        .map(|t| data_offset + t.offset + t.bytes)
        .unwrap_or(data_offset.min(size));
    let padded_end = data_offset + expected;
    if size > padded_end.max(data_end) {
        warnings.push(format!(
            "{} bytes after the end of the tensor data",
            size - padded_end.max(data_end)
        ));
    }

    let architecture = metadata
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .map(str::to_string);
    let context_length = architecture
        .as_ref()
        .and_then(|a| metadata.get(&format!("{a}.context_length")))
        .and_then(MetaValue::as_u64);
    let mut weight_bytes_per_token: u64 = tensors.iter().map(|t| t.bytes).sum();
    let find = |n: &str| tensors.iter().find(|t| t.name(&arena) == n);
    if let (Some(embd), Some(_)) = (find("token_embd.weight"), find("output.weight")) {
        weight_bytes_per_token -= embd.bytes;
    }
    let arch_u64 = |key: &str| {
        architecture
            .as_ref()
            .and_then(|a| metadata.get(&format!("{a}.{key}")))
            .and_then(MetaValue::as_u64)
    };
    let kv_bytes_per_position = (|| {
        let layers = arch_u64("block_count")?;
        let heads = arch_u64("attention.head_count")?.max(1);
        let kv_heads = arch_u64("attention.head_count_kv").unwrap_or(heads);
        let head = arch_u64("attention.key_length")
            .or_else(|| arch_u64("embedding_length").map(|e| e / heads))?;
        2u64.checked_mul(layers)?
            .checked_mul(kv_heads)?
            .checked_mul(head)?
            .checked_mul(2)
    })();
    let vocab_size = match metadata.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array { len, .. }) => Some(*len),
        _ => None,
    };
    Ok(GgufSummary {
        version,
        file_size: size,
        tensor_count,
        name: metadata
            .get("general.name")
            .and_then(MetaValue::as_str)
            .map(str::to_string),
        architecture,
        parameters,
        context_length,
        vocab_size,
        alignment,
        data_offset,
        quantization,
        weight_bytes_per_token,
        kv_bytes_per_position,
        warnings,
        metadata,
    })
}

/// One tensor record, as the checks after the header need it.
struct Rec {
    /// (start, length) in the names arena.
    name: (u32, u32),
    ggml_type: u32,
    offset: u64,
    elements: u64,
    bytes: u64,
}

impl Rec {
    fn name<'a>(&self, arena: &'a str) -> &'a str {
        let (s, l) = (self.name.0 as usize, self.name.1 as usize);
        arena.get(s..s + l).unwrap_or("")
    }
}

/// A fixed hasher for the duplicate-name check (a collision only costs a scan).
const NAME_HASH: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher> =
    std::hash::BuildHasherDefault::new();

/// sha256 of a whole file (see [`super::sha256_file`]).
pub use super::sha256_file;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod roofline_bytes {
    /// The shipped test model, when present (scripts/setup.sh fetches it): SmolLM2-135M has
    /// tied embeddings (no output.weight), 30 layers, 3 KV heads of 64.
    #[test]
    fn smollm2_bytes_per_token() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let Ok(s) = super::verify_file(&path) else {
            return;
        };
        let total: u64 = s.quantization.values().map(|(_, b)| *b).sum();
        assert_eq!(s.weight_bytes_per_token, total);
        assert_eq!(s.kv_bytes_per_position, Some(2 * 30 * 3 * 64 * 2));
        eprintln!("weights {} bytes, kv {:?}", total, s.kv_bytes_per_position);
    }
}
