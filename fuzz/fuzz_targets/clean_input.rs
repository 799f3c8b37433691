//! See `streamrec::fuzzing::clean_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamrec::fuzzing::clean_input(data));
