//! vswitch (placeholder while the crate is written)
