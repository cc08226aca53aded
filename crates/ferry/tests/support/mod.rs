//! Helpers shared by the agent test suites.

pub mod world;
