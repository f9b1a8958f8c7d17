//! libFuzzer entry for `bookbroker_fuzz_bodies::http1_response`; the checks live there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bookbroker_fuzz_bodies::http1_response(data));
