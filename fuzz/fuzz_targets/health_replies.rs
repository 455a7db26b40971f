#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::health_replies::run(data));
