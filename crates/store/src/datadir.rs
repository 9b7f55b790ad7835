//! The member's data directory: what is in it, and refusing what we did not write.
//!
//! Layout (under `--data-dir`): `member/kaname.json` (format marker and identity),
//! `member/raft-log/` (the Raft log, chunked WAL files), `member/db.redb` (the MVCC store),
//! `member/snap/` (Raft snapshots).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
const FORMAT_NAME: &str = "kaname-etcd-data";

/// Written once when the member is created; checked at every start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marker {
    pub format: String,
    pub version: u32,
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    /// The member joined a running cluster (`--initial-cluster-state existing`): its ID was
    /// given by `member add`, not derived from the flags, so restarts take it from here.
    #[serde(default)]
    pub joined: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data dir {0} was written by etcd (found member/wal or member/snap/db): kaname cannot use etcd's files; restore a snapshot instead. The directory was left untouched")]
    WrittenByEtcd(PathBuf),
    #[error("data dir {0} is not empty and was not written by kaname (no member/kaname.json); refusing to use it. The directory was left untouched")]
    Foreign(PathBuf),
    #[error("data dir {path} has format {found:?} version {version}, this kaname reads {FORMAT_NAME:?} version {FORMAT_VERSION}; refusing to start. The directory was left untouched")]
    UnknownFormat { path: PathBuf, found: String, version: u32 },
    #[error("data dir {path} belongs to member {name:?} ({stored:x}), but the flags describe member {flag_name:?} ({flag:x}) in cluster {flag_cluster:x}: --name/--initial-cluster/--initial-cluster-token disagree with the data (--initial-cluster must list either the members the data dir was created with or its current members)")]
    IdentityMismatch { path: PathBuf, name: String, stored: u64, flag_name: String, flag: u64, flag_cluster: u64 },
    #[error("unreadable marker {0} ({1}); refusing to start. The directory was left untouched")]
    UnreadableMarker(PathBuf, String),
    #[error("data dir {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        DataDir { root: root.to_path_buf() }
    }

    pub fn member_dir(&self) -> PathBuf {
        self.root.join("member")
    }
    pub fn log_path(&self) -> PathBuf {
        self.member_dir().join("raft-log")
    }
    pub fn db_path(&self) -> PathBuf {
        self.member_dir().join("db.redb")
    }
    pub fn snap_dir(&self) -> PathBuf {
        self.member_dir().join("snap")
    }
    fn marker_path(&self) -> PathBuf {
        self.member_dir().join("kaname.json")
    }

    /// Returns the marker of an existing member, `None` for a fresh (absent or empty)
    /// directory, or an error for anything we must not touch.
    pub fn inspect(&self) -> Result<Option<Marker>, DataDirError> {
        let io = |e| DataDirError::Io(self.root.clone(), e);
        match std::fs::read(self.marker_path()) {
            Ok(bytes) => {
                let marker: Marker = serde_json::from_slice(&bytes)
                    .map_err(|e| DataDirError::UnreadableMarker(self.marker_path(), e.to_string()))?;
                if marker.format != FORMAT_NAME || marker.version != FORMAT_VERSION {
                    return Err(DataDirError::UnknownFormat {
                        path: self.root.clone(),
                        found: marker.format,
                        version: marker.version,
                    });
                }
                Ok(Some(marker))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.member_dir().join("wal").exists() || self.member_dir().join("snap").join("db").exists() {
                    return Err(DataDirError::WrittenByEtcd(self.root.clone()));
                }
                match std::fs::read_dir(&self.root) {
                    Ok(entries) => {
                        // An empty member/ is what a crash between `create` and
                        // `write_marker` leaves: still fresh.
                        let member = self.member_dir();
                        let empty_dir =
                            |p: &Path| std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(false);
                        for entry in entries.flatten() {
                            if !(entry.path() == member && empty_dir(&member)) {
                                return Err(DataDirError::Foreign(self.root.clone()));
                            }
                        }
                        Ok(None)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Creates the member directory of a fresh member; the marker goes in next, before
    /// anything else.
    pub fn create(&self) -> Result<(), DataDirError> {
        std::fs::create_dir_all(self.member_dir()).map_err(|e| DataDirError::Io(self.root.clone(), e))
    }

    /// Records the member's identity. Written before the stores are created, so any directory
    /// holding our files carries the marker; a member whose Raft log is still empty is simply
    /// initialised again at the next start.
    pub fn write_marker(&self, marker: &Marker) -> Result<(), DataDirError> {
        let io = |e| DataDirError::Io(self.root.clone(), e);
        let tmp = self.marker_path().with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(marker).expect("marker serializes")).map_err(io)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, self.marker_path()).map_err(io)
    }

    pub fn new_marker(name: &str, member_id: u64, cluster_id: u64, joined: bool) -> Marker {
        Marker { format: FORMAT_NAME.into(), version: FORMAT_VERSION, name: name.into(), member_id, cluster_id, joined }
    }
}
