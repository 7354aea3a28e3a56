#![no_main]
//! Fuzz target: parsing a TC3-HMAC-SHA256 Authorization header must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = control::tc3::Authorization::parse(s);
    }
});
