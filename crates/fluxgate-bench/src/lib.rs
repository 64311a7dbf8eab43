//! What the bench binaries share: the instance under measurement, the external load generator,
//! the instruction counter and the key seeder.

pub mod callgrind;
pub mod node;
pub mod seed;
pub mod wrk;
