//! The PROXY protocol parser (v1 and v2) on arbitrary first bytes of a stream; the invariants
//! live in `lb_common::proxy::parse::fuzz_check` (behind lb-common's `fuzzing` feature) so
//! lb-common's unit tests check them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lb_common::proxy::parse::fuzz_check(data));
