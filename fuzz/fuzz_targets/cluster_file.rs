//! Fuzz target `cluster_file`: arbitrary bytes through `vxmesh::fuzzing::cluster_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::cluster_file(data));
