#![no_main]
//! Fuzz target: relay::srtp::rtcp::fuzz_compound (the compound RTCP views and the
//! per-destination rebuild the engine routes with) must never panic on arbitrary bytes, and
//! every rebuilt copy must hold only what its destination may get.
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::srtp::rtcp::fuzz_compound(data));
