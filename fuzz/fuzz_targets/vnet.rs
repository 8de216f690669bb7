//! Fuzz target `vnet`: arbitrary bytes through `vxmesh::fuzzing::vnet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::vnet(data));
