//! Fuzz target `lb_nat`: arbitrary bytes through `vxmesh::fuzzing::lb_nat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::lb_nat(data));
