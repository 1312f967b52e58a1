//! The PROXY protocol parser on arbitrary first bytes of a stream; the invariants live in
//! `lb_common::proxy::parse::fuzz_check` so unit tests check them too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lb_common::proxy::parse::fuzz_check(data));
