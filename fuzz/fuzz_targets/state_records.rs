//! See `streamrec::fuzzing::state_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamrec::fuzzing::state_records(data));
