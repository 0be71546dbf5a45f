//! The protocol version, checked in the first frame of every connection.
//!
//! Changelog:
//! - 1: first version (Hello, Welcome/Reject, Ready/Fatal, Run, Done/Failed, Shutdown).
//! - 2: byte tasks: `ToWorker::Body` pieces and `Format::Text` (`fetch --process`).
//! - 3: items jobs: `Welcome` names its `Input` (a range in a format, or items) instead of a
//!   format; `ToWorker::Items` batches; `Done` of an items job carries one record per item;
//!   `Format::Text` removed.
//! - 4: command jobs: `Input::Jobs` (`run`: each item a command, each answered with a job
//!   outcome record) and `Input::Lines` (`map --exec`: lines for a persistent command);
//!   `FromWorker::Broken` (a contract broken after results were sent: the run stops).
//! - 5: `FromWorker::Progress`: how many items of a unit are done, so deadlines run per item.
//! - 6: `ToWorker::ItemsAt`: a batch of items lying in the typed pool's shared item arena
//!   (`POWERPOOL_ITEMS_ARENA`), sent as where it lies instead of as its bytes;
//!   `FromWorker::NoArena`: a worker that cannot use the arena says why.

/// Bumped whenever any message's encoding changes. A worker of another version is refused in the
/// handshake with a message that names both versions.
pub const PROTOCOL_VERSION: u32 = 6;
