//! See `streamrec::fuzzing::clean_catalog`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamrec::fuzzing::clean_catalog(data));
