//! vxlan (placeholder while the crate is written)
