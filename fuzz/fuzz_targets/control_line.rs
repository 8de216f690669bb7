//! Fuzz target `control_line`: arbitrary bytes through `vxmesh::fuzzing::control_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::control_line(data));
