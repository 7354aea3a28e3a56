#![no_main]
//! Fuzz target: relay::wire::fuzz_parse must never panic on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::wire::fuzz_parse(data));
