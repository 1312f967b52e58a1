//! See `sluice_fuzz::forwarded` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: sluice_fuzz::forwarded::Input| sluice_fuzz::forwarded::check(&input));
