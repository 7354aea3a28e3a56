#![no_main]
//! Fuzz target: relay::srtp::fuzz_unprotect must never panic on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::srtp::fuzz_unprotect(data));
