//! `snapshot restore`: the data dir of a member of a *new* cluster, built from a snapshot that
//! `Maintenance.Snapshot` streamed (`etcdctl snapshot save`).
//!
//! As etcd's restore, it keeps the key-value history (so revisions continue where they were),
//! the leases and the alarms, and drops what belonged to the old cluster: its Raft position,
//! its membership and member attributes, the removed-member list. The new member's identity
//! comes from the restore flags exactly as `kaname etcd` derives it from the same flags, so the
//! restored members start with `kaname etcd` and those flags and form the new cluster.

use std::io::{BufReader, Cursor};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use sha2::{Digest, Sha256};

use crate::config::{self, EtcdConfig};
use crate::datadir::DataDir;
use crate::mvcc::MvccStore;
use crate::raft::state_machine::{read_snapshot_rows, OLD_CLUSTER_META};

/// What `etcdctl snapshot restore` takes.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub snapshot: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: Vec<String>,
    pub skip_hash_check: bool,
}

/// The restored member, for the caller to report.
#[derive(Clone, Debug)]
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    pub revision: i64,
}

/// Checks the SHA-256 trailer `Maintenance.Snapshot` appends and returns the content before it.
/// Messages as etcd's.
fn verified_content(bytes: &[u8], skip_hash_check: bool) -> anyhow::Result<&[u8]> {
    let has_hash = bytes.len() % 512 == Sha256::output_size();
    if !has_hash {
        if !skip_hash_check {
            bail!("snapshot missing hash but --skip-hash-check=false");
        }
        return Ok(bytes);
    }
    let (content, sum) = bytes.split_at(bytes.len() - Sha256::output_size());
    if !skip_hash_check {
        let actual = Sha256::digest(content);
        if actual.as_slice() != sum {
            bail!("expected sha256 {:?}, got {:?}", sum, actual.as_slice());
        }
    }
    Ok(content)
}

pub fn restore(opts: &RestoreOptions) -> anyhow::Result<Restored> {
    let cfg = EtcdConfig {
        name: opts.name.clone(),
        data_dir: opts.data_dir.clone(),
        initial_cluster: opts.initial_cluster.clone(),
        initial_cluster_token: opts.initial_cluster_token.clone(),
        initial_advertise_peer_urls: opts.initial_advertise_peer_urls.clone(),
        ..EtcdConfig::default()
    };
    let members = cfg.initial_members()?;
    let me = members.iter().find(|m| m.name == cfg.name).expect("checked by initial_members");
    let cluster_id = config::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
    if opts.data_dir.exists() {
        bail!("data-dir {:?} exists", opts.data_dir.display().to_string());
    }

    let bytes = std::fs::read(&opts.snapshot).with_context(|| format!("open {}", opts.snapshot.display()))?;
    let content = verified_content(&bytes, opts.skip_hash_check)?;

    let dir = DataDir::new(&opts.data_dir);
    dir.create()?;
    let store = MvccStore::open(&dir.db_path()).map_err(|e| anyhow!("create store: {e}"))?;
    let mut reader = BufReader::new(Cursor::new(content));
    store
        .replace_with(|put| {
            read_snapshot_rows(&mut reader, &mut |table, k, v| {
                if table == 0 && OLD_CLUSTER_META.iter().any(|name| name.as_bytes() == k) {
                    return Ok(());
                }
                put(table, k, v)
            })
        })
        .map_err(|e| anyhow!("restore {}: {e}", opts.snapshot.display()))?;
    store.sync().map_err(|e| anyhow!("sync store: {e}"))?;
    let revision = store.current_rev();
    drop(store);
    // The marker goes last: a restore that failed midway leaves a dir `kaname etcd` refuses.
    dir.write_marker(&DataDir::new_marker(&cfg.name, me.id, cluster_id, false))?;
    Ok(Restored { member_id: me.id, cluster_id, revision })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_trailer_is_checked_unless_skipped() {
        let mut bytes = vec![7u8; 512];
        bytes.extend_from_slice(&Sha256::digest(&bytes));
        assert_eq!(verified_content(&bytes, false).unwrap().len(), 512);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(verified_content(&bytes, false).unwrap_err().to_string().starts_with("expected sha256"));
        assert_eq!(verified_content(&bytes, true).unwrap().len(), 512);
        let unhashed = vec![7u8; 512];
        assert_eq!(
            verified_content(&unhashed, false).unwrap_err().to_string(),
            "snapshot missing hash but --skip-hash-check=false"
        );
        assert_eq!(verified_content(&unhashed, true).unwrap().len(), 512);
    }
}
