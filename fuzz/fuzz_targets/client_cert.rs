//! See `sluice_fuzz::client_cert` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_fuzz::client_cert::check(data));
