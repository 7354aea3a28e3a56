#![no_main]
//! Fuzz target: relay::usersig::fuzz_decode must never panic on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::usersig::fuzz_decode(data));
