#![no_main]
//! Fuzz target: relay::proto::fuzz_parse must never panic on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::proto::fuzz_parse(data));
