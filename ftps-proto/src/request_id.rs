//! The id that ties a frontend's answer to the engine's request, shared by both sessions.

/// Identifies one request of one session (server or client); ids are never reused within a session, so
/// an answer cannot reach the wrong request, and a late answer to a request the engine already dropped
/// is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub(crate) u64);

impl ReqId {
    /// The id as a number, for logs and maps.
    pub fn get(self) -> u64 {
        self.0
    }
}
