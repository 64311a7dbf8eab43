//! What the bench binaries share: the instance under measurement, the external load generator,
//! and the key seeder.

pub mod node;
pub mod seed;
pub mod wrk;
