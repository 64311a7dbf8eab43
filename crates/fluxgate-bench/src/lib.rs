//! What the bench binaries share.

pub mod seed;
