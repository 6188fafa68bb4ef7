use super::*;

/// A SafeTensors file: length, header, data.
fn st(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn check(bytes: &[u8]) -> Result<Summary, SafetensorsError> {
    verify_reader(bytes, bytes.len() as u64).map(|(s, _)| s)
}

const GOOD: &str = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}}"#;

#[test]
fn a_valid_file_verifies_with_its_summary() {
    // Padded with spaces, as writers align the data.
    let s = check(&st(&format!("{GOOD}    "), &[0u8; 22])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.tensor_count, 2);
    assert_eq!(s.parameters, 7);
    assert_eq!(s.dtypes.get("F32"), Some(&(1, 4)));
    assert_eq!(s.dtypes.get("BF16"), Some(&(1, 3)));
    assert_eq!(s.metadata.get("format").map(String::as_str), Some("pt"));
    // A zero-element tensor is valid.
    let z = r#"{"z":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]}}"#;
    assert_eq!(check(&st(z, &[])).map(|s| s.parameters).ok(), Some(0));
}

#[test]
fn malformed_files_are_refused_with_the_exact_error() {
    let err = |b: Vec<u8>| check(&b).err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(err(vec![1, 2, 3]), SafetensorsError::TooShort { size: 3 });
    let mut huge = (MAX_HEADER + 1).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(matches!(err(huge), SafetensorsError::HeaderTooLarge { .. }));
    let mut past = 100u64.to_le_bytes().to_vec();
    past.extend_from_slice(b"{}");
    assert_eq!(
        err(past),
        SafetensorsError::HeaderPastEnd { len: 100, size: 10 }
    );
    assert!(matches!(
        err(st("[1]", &[])),
        SafetensorsError::BadHeader { offset: 8, .. }
    ));
    assert!(matches!(
        err(st("{\"a\":\"\u{fffd}\"", &[])),
        SafetensorsError::BadHeader { .. }
    ));
    let mut bad_utf8 = st("{\"a\":\"xx\"}", &[]);
    bad_utf8[14] = 0xff;
    assert!(
        matches!(err(bad_utf8), SafetensorsError::BadHeader { message, .. } if message == "not UTF-8")
    );
    let dup = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert!(
        matches!(err(st(dup, &[0; 8])), SafetensorsError::DuplicateKey { key, .. } if key == "a")
    );
    let dup_inner = r#"{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(
        matches!(err(st(dup_inner, &[0; 4])), SafetensorsError::DuplicateKey { key, .. } if key == "dtype")
    );
    let meta = r#"{"__metadata__":{"n":1}}"#;
    assert!(
        matches!(err(st(meta, &[])), SafetensorsError::BadHeader { message, .. } if message.contains("__metadata__.n"))
    );
    let tensor = |h: &str, data: usize| match err(st(h, &vec![0; data])) {
        SafetensorsError::BadTensor { message, .. } => message,
        other => panic!("{other:?}"),
    };
    assert!(tensor(
        r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#,
        1
    )
    .contains("unknown dtype `Q4`"));
    assert!(tensor(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#,
        4
    )
    .contains("unknown field `x`"));
    assert!(tensor(
        r#"{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        4
    )
    .contains("empty tensor name"));
    assert!(tensor(
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}}"#,
        4
    )
    .contains("needs 12 bytes"));
    assert!(tensor(
        r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}}"#,
        4
    )
    .contains("overflows"));
    assert!(tensor(
        r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
        4
    )
    .contains("non-negative"));
    assert!(tensor(r#"{"a":{"dtype":"F32","shape":[1]}}"#, 0).contains("no data_offsets"));
    let layout = |h: &str, data: usize| match err(st(h, &vec![0; data])) {
        SafetensorsError::Layout { problem, .. } => problem,
        other => panic!("{other:?}"),
    };
    let gap = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert!(layout(gap, 8).contains("gap"));
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert!(layout(overlap, 8).contains("overlapping"));
    assert!(layout(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        4
    )
    .contains("past the 4-byte"));
    assert!(layout(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        9
    )
    .contains("5 bytes of data after it"));
}

#[test]
fn random_corruptions_never_panic() {
    let good = st(GOOD, &[7u8; 22]);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % b.len() as u64) as usize;
            b[i] = (x >> 32) as u8;
        }
        let cut = (x >> 40) as usize % (b.len() + 1);
        let _ = check(&b);
        let _ = check(&b[..cut]);
    }
}

fn shard_dir(index: &str, shards: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.path().join("model.safetensors.index.json"), index)
        .unwrap_or_else(|e| panic!("{e}"));
    for (n, b) in shards {
        std::fs::write(d.path().join(n), b).unwrap_or_else(|e| panic!("{e}"));
    }
    d
}

#[test]
fn sharded_models_must_match_their_index() {
    let s1 = st(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    let s2 = st(
        r#"{"b":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    let shards = vec![
        ("m-1.safetensors", s1.clone()),
        ("m-2.safetensors", s2.clone()),
    ];
    let idx = |total: u64, b: &str| {
        format!(
            r#"{{"metadata":{{"total_size":{total}}},"weight_map":{{"a":"m-1.safetensors","b":"{b}"}}}}"#
        )
    };
    let ok = shard_dir(&idx(12, "m-2.safetensors"), &shards);
    let s = verify_dir(ok.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.tensor_count, s.parameters, s.data_bytes), (2, 4, 12));
    let msg = |d: tempfile::TempDir| {
        verify_dir(d.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(msg(shard_dir(&idx(13, "m-2.safetensors"), &shards)).contains("total_size is 13"));
    assert!(msg(shard_dir(&idx(12, "m-1.safetensors"), &shards))
        .contains("`b` is listed in `m-1.safetensors` but not there"));
    let only_a = r#"{"weight_map":{"a":"m-2.safetensors"}}"#;
    assert!(
        msg(shard_dir(only_a, &shards)).contains("`b` in `m-2.safetensors` is not in the index")
    );
    assert!(msg(shard_dir(&idx(12, "m-3.safetensors"), &shards)).contains("listed but missing"));
    assert!(msg(shard_dir(&idx(12, "../m-2.safetensors"), &shards)).contains("escapes"));
    let both = vec![("m-1.safetensors", s1.clone()), ("m-2.safetensors", s1)];
    let idx2 = r#"{"weight_map":{"a":"m-1.safetensors","x":"m-2.safetensors"}}"#;
    assert!(msg(shard_dir(idx2, &both)).contains("in both"));
}
