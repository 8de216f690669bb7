//! lb (placeholder while the crate is written)
