//! Fuzz target `pipeline`: arbitrary bytes through `vxmesh::fuzzing::pipeline`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::pipeline(data));
