//! The agent's update state machine: poll the channel pointer, verify, download, install,
//! restart, health-check, then commit or roll back, journaled so a crash resumes cleanly.
#![warn(missing_docs)]
