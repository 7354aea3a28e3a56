#![no_main]
//! Fuzz target: the in-room message frame and body parsers (relay::proto::msg) must never
//! panic on arbitrary bytes, and a parsed body re-encodes to the same bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::proto::msg::fuzz_parse(data));
