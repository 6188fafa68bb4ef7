//! Malformed GGUF files built in code, each asserting the exact error kind.

use super::*;

/// Builds GGUF bytes piece by piece; tests then break one piece.
struct Builder {
    version: u32,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<(String, Vec<u64>, u32, u64)>,
    alignment: u64,
    data: u64,
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
}

fn s(out: &mut Vec<u8>, v: &str) {
    out.extend((v.len() as u64).to_le_bytes());
    out.extend(v.as_bytes());
}

fn kv_u32(key: &str, v: u32) -> Vec<u8> {
    let mut o = Vec::new();
    s(&mut o, key);
    o.extend(4u32.to_le_bytes());
    o.extend(v.to_le_bytes());
    o
}

fn kv_str(key: &str, v: &str) -> Vec<u8> {
    let mut o = Vec::new();
    s(&mut o, key);
    o.extend(8u32.to_le_bytes());
    s(&mut o, v);
    o
}

impl Builder {
    fn new() -> Self {
        Builder {
            version: 3,
            kvs: vec![
                kv_str("general.architecture", "llama"),
                kv_u32("llama.context_length", 2048),
            ],
            // Two F32 tensors of 8 elements (32 bytes each): offsets 0 and 32.
            tensors: vec![("a".into(), vec![8], 0, 0), ("b".into(), vec![4, 2], 0, 32)],
            alignment: 32,
            data: 64,
            tensor_count: None,
            kv_count: None,
        }
    }
    fn bytes(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend(b"GGUF");
        o.extend(self.version.to_le_bytes());
        o.extend(
            self.tensor_count
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        o.extend(self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for kv in &self.kvs {
            o.extend(kv);
        }
        for (name, dims, t, off) in &self.tensors {
            s(&mut o, name);
            o.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                o.extend(d.to_le_bytes());
            }
            o.extend(t.to_le_bytes());
            o.extend(off.to_le_bytes());
        }
        let pad = (o.len() as u64).div_ceil(self.alignment) * self.alignment;
        o.resize(pad as usize, 0);
        o.resize((pad + self.data) as usize, 0);
        o
    }
}

fn verify(bytes: &[u8]) -> Result<GgufSummary, GgufError> {
    verify_reader(bytes, bytes.len() as u64)
}

fn err(bytes: &[u8]) -> GgufError {
    match verify(bytes) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_valid_file_verifies_with_its_metadata() {
    let s = verify(&Builder::new().bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.version, 3);
    assert_eq!(s.tensor_count, 2);
    assert_eq!(s.parameters, 16);
    assert_eq!(s.architecture.as_deref(), Some("llama"));
    assert_eq!(s.context_length, Some(2048));
    assert_eq!(s.quantization.get("F32"), Some(&(2, 64)));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn truncated_header() {
    let b = Builder::new().bytes();
    assert!(matches!(err(&b[..20]), GgufError::Truncated { .. }));
    assert!(matches!(err(&b[..2]), GgufError::BadMagic { .. }));
}

#[test]
fn bad_magic_and_versions() {
    let mut b = Builder::new().bytes();
    b[0] = b'X';
    assert!(matches!(err(&b), GgufError::BadMagic { .. }));
    for v in [0, 1, 4] {
        let mut bld = Builder::new();
        bld.version = v;
        assert_eq!(err(&bld.bytes()), GgufError::BadVersion { version: v });
    }
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut b = Builder::new();
    b.tensor_count = Some(1 << 63);
    assert!(matches!(
        err(&b.bytes()),
        GgufError::CountTooLarge { offset: 8, .. }
    ));
    let mut b = Builder::new();
    b.kv_count = Some(1 << 63);
    assert!(matches!(
        err(&b.bytes()),
        GgufError::CountTooLarge { offset: 16, .. }
    ));
    // An array claiming 2^63 elements.
    let mut b = Builder::new();
    let mut kv = Vec::new();
    s(&mut kv, "tokenizer.ggml.tokens");
    kv.extend(9u32.to_le_bytes());
    kv.extend(8u32.to_le_bytes());
    kv.extend((1u64 << 63).to_le_bytes());
    b.kvs.push(kv);
    assert!(matches!(err(&b.bytes()), GgufError::CountTooLarge { .. }));
}

#[test]
fn string_longer_than_the_file() {
    let mut b = Builder::new();
    let mut kv = Vec::new();
    s(&mut kv, "general.name");
    kv.extend(8u32.to_le_bytes());
    kv.extend(1_000_000u64.to_le_bytes());
    b.kvs.push(kv);
    match err(&b.bytes()) {
        GgufError::CountTooLarge { field, count, .. } => {
            assert_eq!(count, 1_000_000);
            assert!(field.contains("string length"), "{field}");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn duplicate_and_empty_keys() {
    let mut b = Builder::new();
    b.kvs.push(kv_str("general.architecture", "llama"));
    assert!(
        matches!(err(&b.bytes()), GgufError::DuplicateKey { key, .. } if key == "general.architecture")
    );
    let mut b = Builder::new();
    b.kvs.push(kv_u32("", 1));
    assert!(matches!(err(&b.bytes()), GgufError::BadKey { .. }));
}

#[test]
fn alignment_must_be_a_bounded_power_of_two_u32() {
    for a in [0u32, 13, 1 << 20] {
        let mut b = Builder::new();
        b.kvs.push(kv_u32("general.alignment", a));
        assert!(
            matches!(err(&b.bytes()), GgufError::BadAlignment { .. }),
            "alignment {a}"
        );
    }
    let mut b = Builder::new();
    b.kvs.push(kv_str("general.alignment", "32"));
    assert!(matches!(err(&b.bytes()), GgufError::BadAlignment { .. }));
    let mut b = Builder::new();
    b.kvs.push(kv_u32("general.alignment", 64));
    b.alignment = 64;
    b.tensors[1].3 = 64;
    b.data = 128;
    assert_eq!(verify(&b.bytes()).map(|s| s.alignment), Ok(64));
}

#[test]
fn misaligned_overlapping_gapped_and_outside_data() {
    let mut b = Builder::new();
    b.tensors[1].3 = 33;
    assert!(
        matches!(err(&b.bytes()), GgufError::BadDataRange { reason, .. } if reason.contains("aligned"))
    );
    let mut b = Builder::new();
    b.tensors[1].3 = 0;
    assert!(
        matches!(err(&b.bytes()), GgufError::BadDataRange { reason, .. } if reason.contains("overlaps"))
    );
    let mut b = Builder::new();
    b.tensors[1].3 = 64;
    b.data = 128;
    assert!(
        matches!(err(&b.bytes()), GgufError::BadDataRange { reason, .. } if reason.contains("gap"))
    );
    let mut b = Builder::new();
    b.data = 40;
    assert!(
        matches!(err(&b.bytes()), GgufError::BadDataRange { reason, .. } if reason.contains("outside"))
    );
}

#[test]
fn unknown_types_nested_arrays_and_bad_bools() {
    let mut b = Builder::new();
    b.tensors[0].2 = 4; // Q4_2, removed from ggml
    assert!(matches!(
        err(&b.bytes()),
        GgufError::UnknownTensorType { ggml_type: 4, .. }
    ));
    let mut b = Builder::new();
    let mut kv = Vec::new();
    s(&mut kv, "x");
    kv.extend(13u32.to_le_bytes());
    b.kvs.push(kv);
    assert!(matches!(
        err(&b.bytes()),
        GgufError::UnknownValueType { value_type: 13, .. }
    ));
    let mut b = Builder::new();
    let mut kv = Vec::new();
    s(&mut kv, "x");
    kv.extend(9u32.to_le_bytes());
    kv.extend(9u32.to_le_bytes());
    kv.extend(1u64.to_le_bytes());
    b.kvs.push(kv);
    assert!(matches!(err(&b.bytes()), GgufError::NestedArray { .. }));
    let mut b = Builder::new();
    let mut kv = Vec::new();
    s(&mut kv, "flag");
    kv.extend(7u32.to_le_bytes());
    kv.push(2);
    b.kvs.push(kv);
    assert!(matches!(
        err(&b.bytes()),
        GgufError::BadBool { value: 2, .. }
    ));
}

#[test]
fn tensor_shapes() {
    let mut b = Builder::new();
    b.tensors[0].1 = vec![1 << 40, 1 << 40];
    assert!(
        matches!(err(&b.bytes()), GgufError::BadTensor { reason, .. } if reason.contains("overflows"))
    );
    let mut b = Builder::new();
    b.tensors[0].1 = vec![1, 1, 1, 1, 8];
    assert!(
        matches!(err(&b.bytes()), GgufError::BadTensor { reason, .. } if reason.contains("dimensions"))
    );
    let mut b = Builder::new();
    b.tensors[0] = ("a".into(), vec![16], 2, 0); // Q4_0 rows must be multiples of 32
    assert!(
        matches!(err(&b.bytes()), GgufError::BadTensor { reason, .. } if reason.contains("multiple"))
    );
    let mut b = Builder::new();
    b.tensors[1].0 = "a".into();
    assert!(
        matches!(err(&b.bytes()), GgufError::BadTensor { reason, .. } if reason.contains("twice"))
    );
    let mut b = Builder::new();
    b.tensors[0].0 = "x".repeat(64);
    assert!(matches!(err(&b.bytes()), GgufError::BadTensor { .. }));
    // A zero-element tensor is valid.
    let mut b = Builder::new();
    b.tensors.push(("empty".into(), vec![0], 0, 64));
    assert!(verify(&b.bytes()).is_ok());
}

#[test]
fn trailing_bytes_and_template_payloads_are_warnings() {
    let mut b = Builder::new();
    b.data = 100;
    let s = verify(&b.bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.warnings,
        vec!["36 bytes after the end of the tensor data".to_string()]
    );
    let mut b = Builder::new();
    b.kvs.push(kv_str(
        "tokenizer.chat_template",
        "{{ ''.__class__.__mro__ }}",
    ));
    let s = verify(&b.bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.warnings.len(), 1);
    assert!(s.warnings[0].contains("dunder"));
}

#[test]
fn every_prefix_of_a_valid_file_fails_cleanly() {
    let b = Builder::new().bytes();
    let header_len = b.len() - 64;
    for cut in 0..header_len {
        assert!(verify(&b[..cut]).is_err(), "prefix {cut}");
    }
}

#[test]
fn random_corruptions_never_panic() {
    // A deterministic stand-in for the cargo-fuzz target (fuzz/fuzz_targets/gguf.rs): flip,
    // overwrite and truncate bytes of a valid file 20,000 times.
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let valid = Builder::new().bytes();
    for _ in 0..20_000 {
        let mut b = valid.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..b.len());
            b[i] = match rng.random_range(0..3) {
                0 => b[i] ^ (1 << rng.random_range(0..8)),
                1 => 0xff,
                _ => rng.random(),
            };
        }
        let cut = rng.random_range(0..=b.len());
        let _ = verify(&b[..cut]);
    }
}
