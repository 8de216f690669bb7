//! Fuzz target `arp`: arbitrary bytes through `vxmesh::fuzzing::arp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::arp(data));
