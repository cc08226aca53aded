//! hello-service: a small HTTP service on ferry-handoff that answers its version.
fn main() {}
