//! The protocol version, checked in the first frame of every connection.
//!
//! Changelog:
//! - 1: first version (Hello, Welcome/Reject, Ready/Fatal, Run, Done/Failed, Shutdown).
//! - 2: byte tasks: `ToWorker::Body` pieces and `Format::Text` (`fetch --process`).

/// Bumped whenever any message's encoding changes. A worker of another version is refused in the
/// handshake with a message that names both versions.
pub const PROTOCOL_VERSION: u32 = 2;
