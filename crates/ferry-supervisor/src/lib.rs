//! `ferry run`: bind and hold the listening sockets with one stable PID, start the app with
//! them, and replace it on reload without dropping a connection.
#![warn(missing_docs)]
