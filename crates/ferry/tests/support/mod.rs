//! Helpers shared by the agent test suites.

pub mod faults;
pub mod world;
