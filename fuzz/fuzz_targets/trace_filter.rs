//! Fuzz target `trace_filter`: arbitrary bytes through `vxmesh::fuzzing::trace_filter`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vxmesh::fuzzing::trace_filter(data));
