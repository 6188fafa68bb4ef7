//! Fuzzes the SafeTensors header reader: any bytes must give Ok or a typed error, never a
//! panic, an allocation beyond the (bounded) header, or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/formats/mod.rs"]
mod formats;

fuzz_target!(|data: &[u8]| {
    let _ = formats::safetensors::verify_reader(data, data.len() as u64);
});
