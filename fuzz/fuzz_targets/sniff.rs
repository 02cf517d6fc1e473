//! libFuzzer entry for `weft_fuzz::sniff`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::sniff(data));
