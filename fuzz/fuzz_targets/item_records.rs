//! See `streamrec::fuzzing::item_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamrec::fuzzing::item_records(data));
