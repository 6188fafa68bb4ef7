//! Fuzzes the GGUF header reader: any bytes must give Ok or a typed error, never a panic, an
//! allocation larger than the input, or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = minerva::formats::gguf::verify_reader(data, data.len() as u64);
});
