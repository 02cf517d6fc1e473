//! libFuzzer entry for `weft_fuzz::request_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::request_head(data));
