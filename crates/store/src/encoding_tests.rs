//! Golden encodings of everything we bincode into the Raft log, into snapshots and onto the
//! peer wire, checked against bytes committed in `testdata/golden_encoding.txt`.
//!
//! bincode has no tags: an enum variant is its position (a `u32`), a struct field is its
//! place in the struct. A variant inserted, reordered or removed in a later version would make
//! an old log entry or snapshot replay as a different command (and a member of the old version
//! misread a newer one's messages), with no error anywhere. So each enum here has one example
//! per variant whose bytes are committed, and the tests below fail, naming the variant, when
//! an encoding changes, when a variant has no example or no committed bytes, or when committed
//! bytes no longer decode.
//!
//! Adding a variant safely: append it at the end of its enum, add an example of it to that
//! enum's list below, run `cargo test -p kaname-store encoding_tests` and add the line the
//! failure prints to the golden file. Never edit or delete a committed line: a changed line
//! means old data would be read differently.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use openraft::{CommittedLeaderId, EntryPayload, StoredMembership, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{AuthOp, Perm};
use crate::error::EtcdError;
use crate::lease::LeaseStatus;
use crate::membership::{ClusterView, MembershipChange};
use crate::raft::network::ForwardReply;
use crate::raft::{Command, CommandResult, LogId, MemberNode, Proposal, TypeConfig};
use crate::server::lease::{LeaseAnswer, LeaseCall};

const GOLDEN_PATH: &str = "crates/store/testdata/golden_encoding.txt";
const GOLDEN: &str = include_str!("../testdata/golden_encoding.txt");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length in {GOLDEN_PATH}: {s}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex in golden file")).collect()
}

/// The committed lines: name → bytes.
fn golden() -> BTreeMap<String, Vec<u8>> {
    let mut lines = BTreeMap::new();
    for line in GOLDEN.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, bytes) = line.split_once(' ').unwrap_or_else(|| panic!("bad line in {GOLDEN_PATH}: {line}"));
        let previous = lines.insert(name.to_string(), unhex(bytes.trim()));
        assert!(previous.is_none(), "{name} is in {GOLDEN_PATH} twice");
    }
    lines
}

/// A variant's name as `Debug` prints it (`Put([..])` → `Put`).
fn variant_name(v: &impl Debug) -> String {
    let debug = format!("{v:?}");
    debug.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or_default().to_string()
}

/// Checks one type's examples against the golden file, collecting what is wrong in `failures`
/// and the names it checked in `seen`.
struct Checker {
    golden: BTreeMap<String, Vec<u8>>,
    seen: BTreeSet<String>,
    failures: Vec<String>,
}

impl Checker {
    fn new() -> Self {
        Checker { golden: golden(), seen: BTreeSet::new(), failures: Vec::new() }
    }

    /// One value under `name`: its encoding must be the committed one, and the committed bytes
    /// must decode to it.
    fn value<T: Serialize + DeserializeOwned + Debug>(&mut self, name: &str, value: &T) {
        assert!(self.seen.insert(name.to_string()), "two examples are named {name}");
        let encoded = bincode::serialize(value).expect("example encodes");
        let Some(committed) = self.golden.get(name) else {
            self.failures.push(format!(
                "{name} has no committed encoding: if it is new (appended last), add this line to {GOLDEN_PATH}:\n    {name} {}",
                hex(&encoded)
            ));
            return;
        };
        if encoded != *committed {
            self.failures.push(format!(
                "{name} now encodes as {} but {GOLDEN_PATH} has {}: bincode numbers variants and fields by \
                 position, so a variant was inserted, reordered or removed, or a field changed. Old Raft logs, \
                 snapshots or peers would read it as something else. Append new variants at the end instead.",
                hex(&encoded),
                hex(committed)
            ));
        }
        match bincode::deserialize::<T>(committed) {
            Ok(decoded) if format!("{decoded:?}") == format!("{value:?}") => {}
            Ok(decoded) => {
                self.failures.push(format!("{name}: the committed bytes decode as {decoded:?}, not {value:?}"))
            }
            Err(e) => self.failures.push(format!("{name}: the committed bytes no longer decode: {e}")),
        }
    }

    /// Every variant of the enum `T`, one example each, in declaration order: the examples
    /// must be variants 0..n, and there must be no variant n (else it has no example).
    fn variants<T: Serialize + DeserializeOwned + Debug>(&mut self, ty: &str, examples: &[T]) {
        for (i, example) in examples.iter().enumerate() {
            let name = format!("{ty}::{}", variant_name(example));
            let encoded = bincode::serialize(example).expect("example encodes");
            let index = u32::from_le_bytes(encoded[..4].try_into().expect("a variant index"));
            if index as usize != i {
                self.failures.push(format!(
                    "{name} is variant {index} but example {i} of {ty}: list the examples in declaration order, one per variant"
                ));
            }
            self.value(&name, example);
        }
        let n = examples.len() as u32;
        match bincode::deserialize::<T>(&n.to_le_bytes()) {
            // serde's "invalid value: integer `n`, expected variant index 0 <= i < n".
            Err(e) if e.to_string().contains(&format!("integer `{n}`")) => {}
            other => self.failures.push(format!(
                "{ty} has a variant {n} without an example ({other:?}): add one to the list of {ty} in \
                 encoding_tests.rs, and its bytes to {GOLDEN_PATH}"
            )),
        }
    }

    /// Fails with everything found; also when a committed line has no example any more.
    fn finish(mut self) {
        for name in self.golden.keys() {
            if !self.seen.contains(name) {
                self.failures.push(format!(
                    "{name} is in {GOLDEN_PATH} but has no example: variants must never be removed or renamed \
                     (old logs still hold them)"
                ));
            }
        }
        assert!(self.failures.is_empty(), "golden encodings:\n{}", self.failures.join("\n"));
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn node(name: &str, port: u16) -> MemberNode {
    MemberNode { name: name.into(), peer_urls: vec![format!("http://127.0.0.1:{port}")] }
}

fn membership() -> openraft::Membership<u64, MemberNode> {
    let voters = BTreeSet::from([1, 2]);
    let nodes = BTreeMap::from([(1, node("m1", 2380)), (2, node("m2", 2381)), (3, node("m3", 2382))]);
    openraft::Membership::new(vec![voters], nodes)
}

fn commands() -> Vec<Command> {
    vec![
        Command::Put(vec![0x0a, 0x01, b'k', 0x12, 0x01, b'v']),
        Command::DeleteRange(vec![0x0a, 0x01, b'k']),
        Command::Txn(vec![0x12, 0x00]),
        Command::Compact(vec![0x08, 0x07]),
        Command::PublishAttributes {
            member_id: 0x1122_3344_5566_7788,
            name: "m1".into(),
            client_urls: vec!["http://127.0.0.1:2379".into(), "http://10.0.0.1:2379".into()],
        },
        Command::Alarm(vec![0x08, 0x01, 0x10, 0x05, 0x18, 0x01]),
        Command::LeaseGrant(vec![0x08, 0x3c, 0x10, 0x2a]),
        Command::LeaseRevoke(vec![0x08, 0x2a]),
        Command::Auth {
            user: "root".into(),
            auth_revision: 3,
            op: AuthOp::UserAdd { name: "alice".into(), hash: "$2b$04$h".into(), no_password: false },
        },
        Command::AsUser { user: "alice".into(), auth_revision: 9, cmd: Box::new(Command::Put(vec![0x0a, 0x01, b'a'])) },
    ]
}

fn auth_ops() -> Vec<AuthOp> {
    vec![
        AuthOp::Enable,
        AuthOp::Disable,
        AuthOp::Authenticate { name: "alice".into(), prefix: "abcdefghijklmnop".into() },
        AuthOp::UserAdd { name: "bob".into(), hash: String::new(), no_password: true },
        AuthOp::UserDelete { name: "bob".into() },
        AuthOp::UserChangePassword { name: "alice".into(), hash: "$2b$04$x".into() },
        AuthOp::UserGrantRole { user: "alice".into(), role: "reader".into() },
        AuthOp::UserRevokeRole { name: "alice".into(), role: "reader".into() },
        AuthOp::RoleAdd { name: "reader".into() },
        AuthOp::RoleDelete { role: "reader".into() },
        AuthOp::RoleGrantPermission {
            name: "reader".into(),
            perm: Perm { perm_type: 2, key: b"a".to_vec(), range_end: b"b".to_vec() },
        },
        AuthOp::RoleRevokePermission { role: "reader".into(), key: b"a".to_vec(), range_end: vec![0] },
    ]
}

fn errors() -> Vec<EtcdError> {
    use EtcdError::*;
    vec![
        EmptyKey,
        TooManyOps,
        DuplicateKey,
        RequestTooLarge,
        ValueProvided,
        LeaseProvided,
        KeyNotFound,
        LeaseNotFound,
        Compacted,
        FutureRev,
        NoLeader,
        LeaderChanged,
        Timeout,
        Stopped,
        MemberNotFound,
        Internal("disk on fire".into()),
        NoSpace,
        PeerUrlExists,
        TooManyLearners,
        NotEnoughStarted,
        MemberNotLearner,
        LearnerNotReady,
        BadMemberUrls,
        Unhealthy,
        NotLeader,
        BadLeaderTransferee,
        LeaseExists,
        LeaseTtlTooLarge,
        RootUserNotExist,
        RootRoleNotExist,
        UserAlreadyExist,
        UserEmpty,
        UserNotFound,
        RoleAlreadyExist,
        RoleNotFound,
        RoleEmpty,
        AuthFailed,
        PermissionDenied,
        RoleNotGranted,
        PermissionNotGranted,
        AuthNotEnabled,
        InvalidAuthToken,
        InvalidAuthMgmt,
        AuthOldRevision,
    ]
}

/// The Raft log: each entry's payload (a [`Proposal`] of [`Command`]s) and its
/// position, as `raft/log_store.rs` writes them.
#[test]
fn raft_log_encodings_are_the_committed_ones() {
    let mut c = Checker::new();
    c.variants("Command", &commands());
    c.variants("AuthOp", &auth_ops());
    c.value("Proposal", &Proposal(vec![Command::Compact(vec![0x08, 0x07]), Command::LeaseRevoke(vec![0x08, 0x2a])]));
    c.value("MemberNode", &node("m1", 2380));
    c.variants::<EntryPayload<TypeConfig>>(
        "EntryPayload",
        &[
            EntryPayload::Blank,
            EntryPayload::Normal(Proposal(vec![Command::Put(vec![0x0a, 0x01, b'k'])])),
            EntryPayload::Membership(membership()),
        ],
    );
    c.value("LogId", &log_id(4, 17));
    c.value("Vote", &Vote::<u64>::new_committed(4, 2));
    // What the state machine keeps with the data, so in snapshots (`META_APPLIED`,
    // `META_MEMBERSHIP`).
    c.value("Meta::applied", &Some(log_id(4, 17)));
    c.value("Meta::membership", &StoredMembership::new(Some(log_id(3, 9)), membership()));
    // The rest of the golden file is checked by the other test.
    c.seen.extend(c.golden.keys().filter(|k| !is_log_entry(k)).cloned().collect::<Vec<_>>());
    c.finish();
}

fn is_log_entry(name: &str) -> bool {
    ["Command::", "AuthOp::", "Proposal", "MemberNode", "EntryPayload::", "LogId", "Vote", "Meta::"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// What members send each other: the results of replicated commands (the leader decides
/// errors such as a compacted revision inside a txn) and the forwarded calls' answers.
#[test]
fn replicated_errors_and_peer_messages_encode_as_committed() {
    let mut c = Checker::new();
    c.variants("EtcdError", &errors());
    let ok: CommandResult = Ok(serde_bytes::ByteBuf::from(vec![0x0a, 0x00]));
    let failed: CommandResult = Err(EtcdError::Compacted);
    c.variants("CommandResult", &[ok.clone(), failed.clone()]);
    c.variants::<ForwardReply<Vec<CommandResult>>>(
        "ForwardReply",
        &[
            ForwardReply::Done(42, vec![ok, failed]),
            ForwardReply::NotLeader(Some(3)),
            ForwardReply::Failed(EtcdError::Timeout),
        ],
    );
    c.variants("LeaseCall", &[LeaseCall::Renew(42), LeaseCall::TimeToLive { id: 42, keys: true }]);
    c.variants(
        "LeaseAnswer",
        &[
            LeaseAnswer::Renewed(60),
            LeaseAnswer::Status(Some(LeaseStatus { granted_ttl: 60, remaining: 59, keys: vec![b"k".to_vec()] })),
        ],
    );
    c.variants(
        "MembershipChange",
        &[
            MembershipChange::Add { id: 7, peer_urls: vec!["http://127.0.0.1:2390".into()], learner: true },
            MembershipChange::Remove(7),
            MembershipChange::Update { id: 7, peer_urls: vec!["http://127.0.0.1:2391".into()] },
            MembershipChange::Promote(7),
        ],
    );
    c.value("ClusterView", &ClusterView { cluster_id: 0xabcd, members: vec![(1, node("m1", 2380), false)] });
    c.seen.extend(c.golden.keys().filter(|k| is_log_entry(k)).cloned().collect::<Vec<_>>());
    c.finish();
}
