//! Fuzz target `gro`: arbitrary bytes through `vxmesh::fuzzing::gro`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::gro(data));
