//! Fuzz target `dns`: arbitrary bytes through `vxmesh::fuzzing::dns`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::dns(data));
