//! See `sluice_fuzz::http_request` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_fuzz::http_request::check(data));
