//! Raft glue: the replicated command type, and the openraft storage and network adapters.
//!
//! openraft runs in its standard one-leader-per-term mode (`single-term-leader`), so a term
//! means what it means in etcd and `raft_term` in response headers is comparable.

pub mod calls;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod stream;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::EtcdError;

/// One replicated request. etcd requests travel as their protobuf encoding, so the log holds
/// exactly what the client sent and the apply step decodes it with the same types the gRPC
/// edge used.
///
/// Commands are written into the Raft log (every member's WAL, replayed at restart) with
/// bincode, which encodes a variant as its position. So add a variant only at the end, and
/// never reorder or remove one: an old log would replay as the wrong command. Give the new
/// variant an example in `src/encoding_tests.rs` and commit the golden bytes its test prints
/// into `testdata/golden_encoding.txt`; the test fails until then.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    // serde_bytes: bincode would otherwise (de)serialize payloads byte by byte.
    Put(#[serde(with = "serde_bytes")] Vec<u8>),
    DeleteRange(#[serde(with = "serde_bytes")] Vec<u8>),
    Txn(#[serde(with = "serde_bytes")] Vec<u8>),
    Compact(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A member announces the name and client URLs it serves (etcd's attribute publish), so
    /// every member can answer `MemberList` with them.
    PublishAttributes {
        member_id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    // New variants go last: bincode numbers variants by position, in logs and on the wire
    // (see the enum's docs).
    /// An `AlarmRequest` that raises or clears an alarm (alarms are replicated state).
    Alarm(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An encoded `LeaseGrantRequest`, its ID already chosen (IDs must agree on all members).
    LeaseGrant(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An encoded `LeaseRevokeRequest`: a client's revoke, or the leader's for an expired lease.
    LeaseRevoke(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A change of the auth state (etcd's auth requests), with who asked: admin rights are
    /// checked when it is applied.
    Auth {
        user: String,
        auth_revision: u64,
        op: crate::auth::AuthOp,
    },
    /// A client's write (Put, DeleteRange, Txn, LeaseRevoke) with who sent it and the auth
    /// revision the receiving member saw (etcd's request header `Username`/`AuthRevision`):
    /// permissions are checked when it is applied, against the state of that moment.
    /// An empty user with revision 0 is a client without credentials. Writes the cluster
    /// makes itself (lease expiry) are not wrapped and not checked.
    AsUser {
        user: String,
        auth_revision: u64,
        cmd: Box<Command>,
    },
}

impl Command {
    /// Approximate encoded size, to bound how much one batched proposal carries.
    pub fn size(&self) -> usize {
        match self {
            Command::Put(b)
            | Command::DeleteRange(b)
            | Command::Txn(b)
            | Command::Compact(b)
            | Command::Alarm(b)
            | Command::LeaseGrant(b)
            | Command::LeaseRevoke(b) => b.len(),
            Command::Auth { user, .. } => user.len() + 64,
            Command::AsUser { user, cmd, .. } => user.len() + cmd.size(),
            Command::PublishAttributes { name, client_urls, .. } => {
                name.len() + client_urls.iter().map(String::len).sum::<usize>()
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put(b) => write!(f, "put({} bytes)", b.len()),
            Command::DeleteRange(b) => write!(f, "delete_range({} bytes)", b.len()),
            Command::Txn(b) => write!(f, "txn({} bytes)", b.len()),
            Command::Compact(b) => write!(f, "compact({} bytes)", b.len()),
            Command::Alarm(b) => write!(f, "alarm({} bytes)", b.len()),
            Command::LeaseGrant(b) => write!(f, "lease_grant({} bytes)", b.len()),
            Command::LeaseRevoke(b) => write!(f, "lease_revoke({} bytes)", b.len()),
            Command::PublishAttributes { member_id, .. } => write!(f, "publish({member_id:x})"),
            Command::Auth { .. } => write!(f, "auth"),
            Command::AsUser { cmd, .. } => write!(f, "as_user({cmd})"),
        }
    }
}

/// The outcome of applying a [`Command`]: the encoded etcd response, or the etcd error the
/// state machine decided on (e.g. a compacted revision inside a txn).
pub type CommandResult = Result<serde_bytes::ByteBuf, EtcdError>;

/// One Raft log entry's payload: the commands of concurrent clients, batched.
///
/// openraft 0.9 appends each client write as its own entry and waits for that entry's fsync
/// before taking the next one, so without batching every request would pay a full disk
/// round alone. The server collects whatever arrives while earlier proposals are in flight
/// into one proposal (see `server::batcher`), which is what makes group commit happen.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Proposal(pub Vec<Command>);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal of {} command(s)", self.0.len())
    }
}

/// The results of a [`Proposal`], one per command, in order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProposalResult(pub Vec<CommandResult>);

/// A member as Raft membership records it: its name and peer URLs (what etcd's member ID is
/// derived from). Client URLs are published separately once the member serves them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub name: String,
    pub peer_urls: Vec<String>,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    /// The openraft type family of the store.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = u64,
        Node = MemberNode,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StorageError = openraft::StorageError<u64>;

/// openraft wants its own error type from storage; the cause is kept as text.
pub(crate) fn storage_io_err(e: impl fmt::Display) -> StorageError {
    let io = std::io::Error::other(e.to_string());
    openraft::StorageIOError::<u64>::write(&io).into()
}
