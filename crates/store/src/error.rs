//! Errors the store reports, and their mapping onto the gRPC status etcd clients expect.
//!
//! etcd clients (etcdctl, clientv3, kube-apiserver) recognise failures by the exact message
//! text of the gRPC status (`rpctypes.ErrorDesc`), so every variant here carries etcd's text
//! and code verbatim. Anything that would change those strings breaks real clients.

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

/// A failure that clients must see exactly as etcd reports it.
///
/// It is serializable because some of them are decided by the state machine on the leader
/// and travel back to the member that received the request.
///
/// They travel in bincode, which encodes a variant as its position. So add a variant only at
/// the end, and never reorder or remove one: a member of another version would report a
/// different error. Give the new variant an example in `src/encoding_tests.rs` and commit the
/// golden bytes its test prints into `testdata/golden_encoding.txt`; the test fails until then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A fault of this member (disk, corrupted state) rather than of the request.
    #[error("etcdserver: {0}")]
    Internal(String),
    // New variants go last: bincode numbers variants by position on the wire (see the
    // enum's docs).
    /// The backend reached `--quota-backend-bytes`, or a `NOSPACE` alarm is active.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: given member URLs are invalid")]
    BadMemberUrls,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    // Auth (etcd's rpctypes `ErrGRPC*` for the auth store).
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
}

impl EtcdError {
    /// The gRPC code etcd pairs with each message (see etcd's `api/v3rpc/rpctypes`).
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | TooManyOps | DuplicateKey | RequestTooLarge | ValueProvided | LeaseProvided | KeyNotFound
            | BadMemberUrls | UserEmpty | RoleEmpty | AuthFailed | InvalidAuthMgmt | AuthOldRevision => {
                Code::InvalidArgument
            }
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists | PeerUrlExists | TooManyLearners | NotEnoughStarted | MemberNotLearner | LearnerNotReady
            | NotLeader | BadLeaderTransferee | RootUserNotExist | RootRoleNotExist | UserAlreadyExist
            | UserNotFound | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoLeader | LeaderChanged | Timeout | Stopped | Unhealthy => Code::Unavailable,
            NoSpace => Code::ResourceExhausted,
            Internal(_) => Code::Internal,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Storage faults are never the client's doing; they surface as `Internal` and are logged.
pub fn internal(e: impl std::fmt::Display) -> EtcdError {
    EtcdError::Internal(e.to_string())
}
