//! See `sluice_fuzz::maglev` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: sluice_fuzz::maglev::Input| sluice_fuzz::maglev::check(&input));
