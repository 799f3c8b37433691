//! See `streamrec::fuzzing::changelog_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamrec::fuzzing::changelog_record(data));
