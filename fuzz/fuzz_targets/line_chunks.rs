//! libFuzzer entry for `bookbroker_fuzz_bodies::line_chunks`; the checks live there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bookbroker_fuzz_bodies::line_chunks(data));
