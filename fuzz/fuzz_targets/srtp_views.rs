#![no_main]
//! Fuzz target: relay::srtp::fuzz_views (the RTP and RTCP header views) must never panic on
//! arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::srtp::fuzz_views(data));
