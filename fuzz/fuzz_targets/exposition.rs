//! libFuzzer entry for `weft_fuzz::exposition`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::exposition(data));
