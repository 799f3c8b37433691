//! See `streamrec::fuzzing::model_update`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamrec::fuzzing::model_update(data));
