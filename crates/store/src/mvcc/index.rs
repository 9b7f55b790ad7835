//! In-memory MVCC key index, mirroring etcd's `keyIndex` / `treeIndex`.
//!
//! The backend stores every version of every key under its revision, so it
//! cannot answer "what is key K at revision R" without scanning. This index
//! keeps, per key, the ordered list of revisions that touched it, split into
//! *generations*: a generation runs from the put that (re)creates the key to
//! the tombstone that deletes it. Reads, ranges and compaction are decided
//! here; the backend is only asked for the exact revision the index selects.
//!
//! Compaction follows current etcd (3.4.34+/3.5.15+/3.6): a tombstone sitting
//! exactly on the compaction revision is kept (etcd #18274) so a watcher that
//! starts at the compaction revision still sees the delete; a key deleted and
//! re-created within the compaction revision keeps its live value (etcd
//! #22376). `keep` deliberately differs from `compact` for that tombstone, as
//! in etcd, so HashKV is identical before and after the compaction ran.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Bound;

/// A point in the store's history: `main` is the revision of the write transaction, `sub` the index of the change within it.
///
/// Field order matters: the derived `Ord` compares `main` first, which is the
/// order the backend stores records in and the order the index relies on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

/// Failure of an index lookup or tombstone; maps to etcd's `ErrRevisionNotFound`,
/// which callers translate into "key not found" rather than an internal error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexError {
    RevisionNotFound,
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::RevisionNotFound => f.write_str("mvcc: revision not found"),
        }
    }
}

impl std::error::Error for IndexError {}

/// What `get` finds for one key at a revision.
///
/// Carries exactly what a range response needs besides the value itself:
/// where to fetch the value (`modified`), and the create revision and version
/// that etcd reports in `KeyValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAt {
    pub modified: Revision,
    pub created: Revision,
    pub version: i64,
}

/// One life of a key, from the put that created it to (for all but the last
/// generation) the tombstone that ended it.
///
/// `ver` counts every change ever made in this life, including ones compacted
/// away and the tombstone, so versions stay correct after `revs` is trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Generation {
    ver: i64,
    created: Revision,
    revs: Vec<Revision>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Position of the newest revision visible at `at_rev`; `revs` is sorted,
    /// so a binary search suffices even for hot keys with long histories.
    fn last_at_or_before(&self, at_rev: i64) -> Option<usize> {
        let visible = self.revs.partition_point(|r| r.main <= at_rev);
        visible.checked_sub(1)
    }
}

/// All the history the index still remembers for one key.
///
/// Invariant: `generations` is never empty and only its last element may be
/// empty; a trailing empty generation means the key is currently deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyIndex {
    modified: Revision,
    generations: Vec<Generation>,
}

impl KeyIndex {
    /// A key's first put. Built with exact capacities rather than by pushing onto empty
    /// vectors, which reserve room for four elements each: most keys are written once, and
    /// with a million of them the spare room (a 4-generation and a 4-revision buffer per key,
    /// ~200 bytes) was a third of a member's RSS.
    fn created(rev: Revision) -> Self {
        KeyIndex { modified: rev, generations: vec![Generation { ver: 1, created: rev, revs: vec![rev] }] }
    }

    /// Rebuilds a key whose oldest surviving record is `modified`: earlier
    /// revisions of the generation may have been compacted away, so the create
    /// revision and version must come from the stored KeyValue instead.
    fn restored(created: Revision, modified: Revision, ver: i64) -> Self {
        KeyIndex { modified, generations: vec![Generation { ver, created, revs: vec![modified] }] }
    }

    /// Rebuilds a key whose only surviving record is a tombstone (it survived
    /// because it sat on the compaction revision). Its creation is unknown and
    /// irrelevant: the key reads as absent, yet the tombstone must stay indexed
    /// so the next compaction still lists it as kept until it is superseded.
    fn restored_tombstone(rev: Revision) -> Self {
        let mut ki = Self::restored(Revision::default(), rev, 1);
        ki.generations.push(Generation::default());
        ki
    }

    fn put(&mut self, rev: Revision) {
        // Revisions only grow; an older one here means replay or apply went
        // wrong, and silently accepting it would break the sorted-revs invariant
        // every lookup depends on. etcd panics for the same reason.
        assert!(
            rev > self.modified,
            "mvcc index: put with revision {rev:?} not after last modification {:?}",
            self.modified
        );
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let g = self.generations.last_mut().expect("non-empty");
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.modified = rev;
    }

    fn tombstone(&mut self, rev: Revision) -> Result<(), IndexError> {
        if self.generations.last().is_none_or(Generation::is_empty) {
            return Err(IndexError::RevisionNotFound);
        }
        self.put(rev);
        self.generations.push(Generation::default());
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.generations.iter().all(Generation::is_empty)
    }

    /// The generation alive at `at_rev`, or None if the key did not exist then
    /// (before its first put, or between a tombstone and the next put).
    fn find_generation(&self, at_rev: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(end)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            // In a closed generation the last revision is the tombstone.
            if i != last && end.main <= at_rev {
                return None;
            }
            if first.main <= at_rev {
                return Some(g);
            }
        }
        None
    }

    fn get(&self, at_rev: i64) -> Result<KeyAt, IndexError> {
        let g = self.find_generation(at_rev).ok_or(IndexError::RevisionNotFound)?;
        let n = g.last_at_or_before(at_rev).ok_or(IndexError::RevisionNotFound)?;
        Ok(KeyAt {
            modified: g.revs[n],
            created: g.created,
            // Versions of later revisions in this generation are subtracted
            // rather than stored per revision, which keeps revs a plain list.
            version: g.ver - (g.revs.len() - n - 1) as i64,
        })
    }

    /// Picks the generation a read at `at_rev` would land in (or the first one
    /// after it) and, within it, the revision such a read returns; that
    /// revision is added to `kept`. Generations before it are entirely dead.
    fn compaction_point(&self, at_rev: i64, kept: &mut HashSet<Revision>) -> (usize, Option<usize>) {
        let gens = &self.generations;
        let mut gi = 0;
        while let [g, next, ..] = &gens[gi..] {
            let tomb = g.revs.last().expect("closed generation").main;
            // A tombstone on at_rev normally stays, but not if the key was
            // re-created later in that same transaction: the read at at_rev
            // then sees the new generation, which must be the one kept.
            let recreated = next.revs.first().is_some_and(|r| r.main <= at_rev);
            if tomb > at_rev || (tomb == at_rev && !recreated) {
                break;
            }
            gi += 1;
        }
        let ri = gens[gi].last_at_or_before(at_rev);
        if let Some(ri) = ri {
            kept.insert(gens[gi].revs[ri]);
        }
        (gi, ri)
    }

    fn compact(&mut self, at_rev: i64, kept: &mut HashSet<Revision>) {
        let (gi, ri) = self.compaction_point(at_rev, kept);
        if let Some(ri) = ri {
            self.generations[gi].revs.drain(..ri);
        }
        self.generations.drain(..gi);
    }

    fn keep(&self, at_rev: i64, kept: &mut HashSet<Revision>) {
        let (gi, ri) = self.compaction_point(at_rev, kept);
        let g = &self.generations[gi];
        // Unlike compact, leave out a tombstone sitting on at_rev: etcd hashes
        // that way, and HashKV must agree across members and versions.
        let closed = gi + 1 != self.generations.len();
        if let Some(ri) = ri.filter(|&ri| closed && ri + 1 == g.revs.len()) {
            kept.remove(&g.revs[ri]);
        }
    }
}

/// The whole key space, ordered by key so ranges are a single ordered walk.
///
/// Keys are never removed on delete, only by compaction once nothing older
/// than the compaction revision could still need them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

impl TreeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a put of `key` at `rev` (starts a new generation if the key is absent or its last generation ended with a tombstone).
    pub fn put(&mut self, key: &[u8], rev: Revision) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.put(rev),
            None => {
                self.keys.insert(key.to_vec(), KeyIndex::created(rev));
            }
        }
    }

    /// Rebuild path (etcd's keyIndex.restore + put): used when replaying the backend at start, where the first surviving record of a key may be mid-generation after compaction. `created`/`version` come from the stored KeyValue.
    pub fn restore(&mut self, key: &[u8], created: Revision, modified: Revision, version: i64) {
        match self.keys.get_mut(key) {
            // Later records of a key are complete, so they replay as plain puts.
            Some(ki) => ki.put(modified),
            None => {
                self.keys.insert(key.to_vec(), KeyIndex::restored(created, modified, version));
            }
        }
    }

    /// Rebuild path for a tombstone record found while replaying the backend.
    /// If it is the key's first surviving record (its history was compacted up
    /// to the deletion) it is indexed on its own, as etcd's restoreTombstone
    /// does; otherwise it ends the key's current generation like `tombstone`.
    pub fn restore_tombstone(&mut self, key: &[u8], rev: Revision) -> Result<(), IndexError> {
        match self.keys.get_mut(key) {
            Some(ki) => ki.tombstone(rev),
            None => {
                self.keys.insert(key.to_vec(), KeyIndex::restored_tombstone(rev));
                Ok(())
            }
        }
    }

    /// Marks `key` deleted at `rev` (the tombstone ends the current generation). Error if the key is not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> Result<(), IndexError> {
        let ki = self.keys.get_mut(key).ok_or(IndexError::RevisionNotFound)?;
        ki.tombstone(rev)
    }

    /// The live version of `key` as of main revision `at_rev`, or Err(RevisionNotFound).
    pub fn get(&self, key: &[u8], at_rev: i64) -> Result<KeyAt, IndexError> {
        let ki = self.keys.get(key).ok_or(IndexError::RevisionNotFound)?;
        ki.get(at_rev)
    }

    /// Keys live at `at_rev` in the range, in ascending key order, with the revision of their value.
    /// Range rules as etcd's mvcc: `end == None` -> only `key` itself; `end == Some(b"")` (empty) -> every key >= `key`; otherwise [key, end).
    /// `limit == 0` means no limit. Returns (entries up to limit, total count of live keys in range ignoring limit).
    pub fn range(&self, key: &[u8], end: Option<&[u8]>, at_rev: i64, limit: usize) -> (Vec<(Vec<u8>, KeyAt)>, usize) {
        let Some(end) = end else {
            return match self.get(key, at_rev) {
                Ok(at) => (vec![(key.to_vec(), at)], 1),
                Err(_) => (Vec::new(), 0),
            };
        };
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else if end <= key {
            // BTreeMap::range panics on inverted bounds; etcd just finds nothing.
            return (Vec::new(), 0);
        } else {
            Bound::Excluded(end)
        };
        let mut out = Vec::new();
        let mut total = 0;
        for (k, ki) in self.keys.range::<[u8], _>((Bound::Included(key), upper)) {
            if let Ok(at) = ki.get(at_rev) {
                // Keep counting past the limit: the response reports the total.
                if limit == 0 || out.len() < limit {
                    out.push((k.clone(), at));
                }
                total += 1;
            }
        }
        (out, total)
    }

    /// Compacts every key at `rev` (etcd's treeIndex.Compact): drops revisions older than what a read at `rev` needs, drops keys whose history becomes empty, and returns the set of revisions <= rev that must be KEPT in the backend (everything else with main <= rev may be deleted from the backend). Tombstone semantics exactly as etcd's keyIndex.compact.
    pub fn compact(&mut self, rev: i64) -> HashSet<Revision> {
        let mut kept = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(rev, &mut kept);
            !ki.is_empty()
        });
        kept
    }

    /// Like compact but without modifying anything (etcd's treeIndex.Keep, used by HashKV).
    /// Differs from `compact` only in omitting a tombstone whose main revision is `rev`.
    pub fn keep(&self, rev: i64) -> HashSet<Revision> {
        let mut kept = HashSet::new();
        for ki in self.keys.values() {
            ki.keep(rev, &mut kept);
        }
        kept
    }

    /// Number of distinct keys tracked (any state).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NF: Result<KeyAt, IndexError> = Err(IndexError::RevisionNotFound);
    const P: bool = false;
    const T: bool = true;

    #[rustfmt::skip]
    mod helpers {
        use super::super::*;
        pub fn r(main: i64) -> Revision { Revision::new(main, 0) }
        pub fn rs(main: i64, sub: i64) -> Revision { Revision::new(main, sub) }
        pub fn gen(created: Revision, ver: i64, revs: &[Revision]) -> Generation { Generation { ver, created, revs: revs.to_vec() } }
        pub fn empty() -> Generation { Generation::default() }
        pub fn ki(modified: Revision, generations: Vec<Generation>) -> KeyIndex { KeyIndex { modified, generations } }
        pub fn set(revs: &[Revision]) -> HashSet<Revision> { revs.iter().copied().collect() }
        pub fn at(modified: Revision, created: Revision, version: i64) -> Result<KeyAt, IndexError> { Ok(KeyAt { modified, created, version }) }
    }
    use helpers::*;

    /// Applies (revision, is_tombstone) changes to a fresh key.
    fn build(changes: &[(Revision, bool)]) -> KeyIndex {
        let mut k = KeyIndex::default();
        for &(rev, tomb) in changes {
            if tomb {
                k.tombstone(rev).unwrap();
            } else {
                k.put(rev);
            }
        }
        k
    }

    /// etcd's newTestKeyIndex: {2, 4, 6(t)} {8, 10, 12(t)} {14, 15.1, 16(t)} {}
    #[rustfmt::skip]
    fn test_key_index() -> KeyIndex {
        build(&[
            (r(2), P), (r(4), P), (r(6), T),
            (r(8), P), (r(10), P), (r(12), T),
            (r(14), P), (rs(15, 1), P), (r(16), T),
        ])
    }

    #[test]
    #[rustfmt::skip]
    fn key_index_get() {
        let mut k = test_key_index();
        k.compact(4, &mut HashSet::new());
        let cases = [
            (17, NF), (16, NF), (15, at(rs(15, 1), r(14), 2)), (14, at(r(14), r(14), 1)),
            (13, NF), (12, NF), (11, at(r(10), r(8), 2)), (10, at(r(10), r(8), 2)),
            (9, at(r(8), r(8), 1)), (8, at(r(8), r(8), 1)), (7, NF), (6, NF),
            (5, at(r(4), r(2), 2)), (4, at(r(4), r(2), 2)), (3, NF), (2, NF), (1, NF), (0, NF),
        ];
        for (rev, want) in cases {
            assert_eq!(k.get(rev), want, "get({rev})");
        }
    }

    #[test]
    fn key_index_put_restore_tombstone() {
        let mut k = build(&[(r(5), P)]);
        assert_eq!(k, ki(r(5), vec![gen(r(5), 1, &[r(5)])]));
        k.put(r(7));
        assert_eq!(k, ki(r(7), vec![gen(r(5), 2, &[r(5), r(7)])]));

        let restored = KeyIndex::restored(r(5), r(7), 2);
        assert_eq!(restored, ki(r(7), vec![gen(r(5), 2, &[r(7)])]));

        let mut k = build(&[(r(5), P), (r(7), T)]);
        assert_eq!(k, ki(r(7), vec![gen(r(5), 2, &[r(5), r(7)]), empty()]));
        k.put(r(8));
        k.put(r(9));
        k.tombstone(r(15)).unwrap();
        let first = gen(r(5), 2, &[r(5), r(7)]);
        let second = gen(r(8), 3, &[r(8), r(9), r(15)]);
        let want = ki(r(15), vec![first, second, empty()]);
        assert_eq!(k, want);
        assert_eq!(k.tombstone(r(16)), Err(IndexError::RevisionNotFound));
        assert_eq!(k, want, "failed tombstone must not change anything");
    }

    #[test]
    #[should_panic(expected = "not after last modification")]
    fn key_index_put_rejects_older_revision() {
        build(&[(r(5), P), (rs(4, 9), P)]);
    }

    #[test]
    fn key_index_restore_tombstone() {
        let mut k = KeyIndex::restored_tombstone(r(16));
        for rev in 0..=20 {
            assert_eq!(k.get(rev), NF, "get({rev})");
        }
        let mut kept = HashSet::new();
        k.clone().compact(16, &mut kept);
        assert_eq!(kept, set(&[r(16)]), "tombstone on compaction rev stays");

        k.put(r(17));
        k.put(r(18));
        assert_eq!(k.get(18), at(r(18), r(17), 2));
        k.compact(17, &mut HashSet::new());
        assert_eq!(k, ki(r(18), vec![gen(r(17), 2, &[r(17), r(18)])]));
    }

    /// etcd's TestKeyIndexCompactAndKeep table: compacting test_key_index at
    /// 1..=17, with the resulting index and the set compact must keep.
    #[rustfmt::skip]
    fn compact_table() -> Vec<(i64, KeyIndex, HashSet<Revision>)> {
        let (c1, c2, c3) = (r(2), r(8), r(14));
        let full1 = gen(c1, 3, &[r(2), r(4), r(6)]);
        let full2 = gen(c2, 3, &[r(8), r(10), r(12)]);
        let full3 = gen(c3, 3, &[r(14), rs(15, 1), r(16)]);
        let k = |mut gens: Vec<Generation>| {
            gens.push(empty());
            ki(r(16), gens)
        };
        vec![
            (1, k(vec![full1.clone(), full2.clone(), full3.clone()]), set(&[])),
            (2, k(vec![full1.clone(), full2.clone(), full3.clone()]), set(&[r(2)])),
            (3, k(vec![full1.clone(), full2.clone(), full3.clone()]), set(&[r(2)])),
            (4, k(vec![gen(c1, 3, &[r(4), r(6)]), full2.clone(), full3.clone()]), set(&[r(4)])),
            (5, k(vec![gen(c1, 3, &[r(4), r(6)]), full2.clone(), full3.clone()]), set(&[r(4)])),
            (6, k(vec![gen(c1, 3, &[r(6)]), full2.clone(), full3.clone()]), set(&[r(6)])),
            (7, k(vec![full2.clone(), full3.clone()]), set(&[])),
            (8, k(vec![full2.clone(), full3.clone()]), set(&[r(8)])),
            (9, k(vec![full2.clone(), full3.clone()]), set(&[r(8)])),
            (10, k(vec![gen(c2, 3, &[r(10), r(12)]), full3.clone()]), set(&[r(10)])),
            (11, k(vec![gen(c2, 3, &[r(10), r(12)]), full3.clone()]), set(&[r(10)])),
            (12, k(vec![gen(c2, 3, &[r(12)]), full3.clone()]), set(&[r(12)])),
            (13, k(vec![full3.clone()]), set(&[])),
            (14, k(vec![full3.clone()]), set(&[r(14)])),
            (15, k(vec![gen(c3, 3, &[rs(15, 1), r(16)])]), set(&[rs(15, 1)])),
            (16, k(vec![gen(c3, 3, &[r(16)])]), set(&[r(16)])),
            (17, k(vec![]), set(&[])),
        ]
    }

    /// Whether `rev` is the tombstone of a closed generation of `k`, in which
    /// case keep must leave it out even though compact keeps it.
    fn is_tombstone_rev(k: &KeyIndex, rev: i64) -> bool {
        let closed = &k.generations[..k.generations.len() - 1];
        closed.iter().any(|g| g.revs.last().is_some_and(|t| t.main == rev))
    }

    fn keep_then_compact(k: &mut KeyIndex, rev: i64, want: &KeyIndex, want_kept: &HashSet<Revision>) {
        let before = k.clone();
        let mut kept = HashSet::new();
        k.keep(rev, &mut kept);
        assert_eq!(*k, before, "keep({rev}) must not modify");
        let tomb = is_tombstone_rev(k, rev);
        assert_eq!(kept, if tomb { set(&[]) } else { want_kept.clone() }, "keep({rev})");

        let mut kept = HashSet::new();
        k.compact(rev, &mut kept);
        assert_eq!(k, want, "compact({rev})");
        assert_eq!(&kept, want_kept, "compact({rev}) kept");
    }

    #[test]
    fn key_index_compact_and_keep() {
        // Continuous: each compaction applies to the previous result.
        let mut k = test_key_index();
        for (rev, want, kept) in compact_table() {
            keep_then_compact(&mut k, rev, &want, &kept);
        }
        // Jump: skipping tombstone revisions, so compactions leap across them.
        let mut k = test_key_index();
        for (rev, want, kept) in compact_table() {
            if !is_tombstone_rev(&k, rev) {
                keep_then_compact(&mut k, rev, &want, &kept);
            }
        }
        // Once: every compaction starts from the full history.
        for (rev, want, kept) in compact_table() {
            keep_then_compact(&mut test_key_index(), rev, &want, &kept);
        }
    }

    #[test]
    #[rustfmt::skip]
    fn key_index_compact_edge_cases() {
        // (changes, compact at, index after compact, compact's set, keep's set)
        let cases = [
            // Deleted and re-created within revision 4: the live value survives.
            (build(&[(rs(3, 89), P), (r(4), T), (rs(4, 145), P)]), 4,
             ki(rs(4, 145), vec![gen(rs(4, 145), 1, &[rs(4, 145)])]),
             set(&[rs(4, 145)]), set(&[rs(4, 145)])),
            // Deleted, re-created and deleted again: only the last tombstone stays.
            (build(&[(r(1), P), (r(2), T), (rs(2, 1), P), (rs(2, 2), T)]), 2,
             ki(rs(2, 2), vec![gen(rs(2, 1), 2, &[rs(2, 2)]), empty()]),
             set(&[rs(2, 2)]), set(&[])),
            // Tombstone exactly on the compaction revision is kept (etcd #18274).
            (build(&[(r(2), P), (r(3), P), (r(4), T)]), 4,
             ki(r(4), vec![gen(r(2), 3, &[r(4)]), empty()]),
             set(&[r(4)]), set(&[])),
            // Re-created in a later revision: the tombstone is still kept.
            (build(&[(r(1), P), (r(2), T), (r(3), P)]), 2,
             ki(r(3), vec![gen(r(1), 2, &[r(2)]), gen(r(3), 1, &[r(3)])]),
             set(&[r(2)]), set(&[])),
            // etcd's TestKeyIndexCompactOnFurtherRev: past the last change.
            (build(&[(r(1), P), (r(2), P)]), 3,
             ki(r(2), vec![gen(r(1), 2, &[r(2)])]),
             set(&[r(2)]), set(&[r(2)])),
        ];
        for (i, (mut k, rev, want, want_compact, want_keep)) in cases.into_iter().enumerate() {
            let before = k.clone();
            let mut kept = HashSet::new();
            k.keep(rev, &mut kept);
            assert_eq!((&k, &kept), (&before, &want_keep), "case #{i}: keep");
            let mut kept = HashSet::new();
            k.compact(rev, &mut kept);
            assert_eq!((&k, &kept), (&want, &want_compact), "case #{i}: compact");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn key_index_is_empty_and_find_generation() {
        assert!(ki(r(0), vec![empty()]).is_empty());
        assert!(!ki(r(2), vec![gen(r(1), 2, &[r(2)])]).is_empty());

        let k = test_key_index();
        let cases = [
            (0, None), (1, None), (2, Some(0)), (5, Some(0)), (6, None), (7, None),
            (8, Some(1)), (11, Some(1)), (12, None), (13, None), (14, Some(2)), (16, None),
        ];
        for (rev, want) in cases {
            assert_eq!(k.find_generation(rev), want.map(|i| &k.generations[i]), "rev {rev}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn index_get_and_tombstone() {
        let mut ti = TreeIndex::new();
        ti.put(b"foo", r(2));
        ti.put(b"foo", r(4));
        ti.tombstone(b"foo", r(6)).unwrap();
        let cases = [
            (0, NF), (1, NF), (2, at(r(2), r(2), 1)), (3, at(r(2), r(2), 1)),
            (4, at(r(4), r(2), 2)), (5, at(r(4), r(2), 2)), (6, NF),
        ];
        for (rev, want) in cases {
            assert_eq!(ti.get(b"foo", rev), want, "get({rev})");
        }
        assert_eq!(ti.get(b"bar", 6), NF);
        assert_eq!(ti.tombstone(b"foo", r(7)), Err(IndexError::RevisionNotFound));
        assert_eq!(ti.tombstone(b"bar", r(7)), Err(IndexError::RevisionNotFound));

        // Re-creation starts a fresh generation: version and create revision reset.
        ti.put(b"foo", r(8));
        assert_eq!(ti.get(b"foo", 8), at(r(8), r(8), 1));
        assert_eq!(ti.get(b"foo", 7), NF);
        assert_eq!(ti.get(b"foo", 5), at(r(4), r(2), 2));
        assert_eq!(ti.len(), 1);
    }

    #[test]
    #[rustfmt::skip]
    fn index_range_limit_and_count() {
        let mut ti = TreeIndex::new();
        let puts: [&[u8]; 6] = [b"foo", b"foo1", b"foo2", b"foo2", b"foo1", b"foo"];
        for (i, key) in puts.iter().enumerate() {
            ti.put(key, r(i as i64 + 1));
        }
        // (key, end, at_rev, limit, revisions returned, total)
        type Case<'a> = (&'a [u8], Option<&'a [u8]>, i64, usize, &'a [i64], usize);
        let cases: [Case; 24] = [
            (b"bar", None, 6, 0, &[], 0), (b"foo", None, 6, 0, &[6], 1),
            (b"foo", Some(b"foo1"), 6, 0, &[6], 1), (b"foo", Some(b"foo2"), 6, 0, &[6, 5], 2),
            (b"foo", Some(b"fop"), 6, 0, &[6, 5, 4], 3), (b"foo1", Some(b"fop"), 6, 0, &[5, 4], 2),
            (b"foo2", Some(b"fop"), 6, 0, &[4], 1), (b"foo3", Some(b"fop"), 6, 0, &[], 0),
            (b"foo1", Some(b"fop"), 1, 0, &[], 0), (b"foo1", Some(b"fop"), 2, 0, &[2], 1),
            (b"foo1", Some(b"fop"), 3, 0, &[2, 3], 2), (b"foo1", Some(b"fop"), 4, 0, &[2, 4], 2),
            (b"foo1", Some(b"fop"), 5, 0, &[5, 4], 2), (b"foo1", Some(b"fop"), 6, 0, &[5, 4], 2),
            (b"foo", Some(b"fop"), 6, 1, &[6], 3), (b"foo", Some(b"fop"), 6, 2, &[6, 5], 3),
            (b"foo", Some(b"fop"), 6, 3, &[6, 5, 4], 3), (b"foo", Some(b"fop"), 3, 1, &[1], 3),
            (b"foo", Some(b"fop"), 3, 2, &[1, 2], 3), (b"foo", Some(b"fop"), 3, 3, &[1, 2, 3], 3),
            // An empty end means every key from `key` on; an inverted range is empty.
            (b"foo1", Some(b""), 6, 0, &[5, 4], 2), (b"", Some(b""), 6, 0, &[6, 5, 4], 3),
            (b"", Some(b""), 3, 2, &[1, 2], 3), (b"fop", Some(b"foo"), 6, 0, &[], 0),
        ];
        for (i, (key, end, at_rev, limit, want, want_total)) in cases.into_iter().enumerate() {
            let (entries, total) = ti.range(key, end, at_rev, limit);
            let revs: Vec<i64> = entries.iter().map(|(_, a)| a.modified.main).collect();
            assert_eq!((revs.as_slice(), total), (want, want_total), "case #{i}");
            for (k, a) in &entries {
                assert_eq!(Ok(*a), ti.get(k, at_rev), "case #{i}: entry for {k:?}");
            }
        }
    }

    /// etcd's TestIndexCompactAndKeep history:
    /// foo {1, 5, 9(t)} {10}; foo1 {2, 6, 7(t)} {10.1}; foo2 {3, 4, 8(t)} {}
    #[rustfmt::skip]
    fn build_tree() -> TreeIndex {
        let mut ti = TreeIndex::new();
        for (key, rev) in [(&b"foo"[..], 1), (b"foo1", 2), (b"foo2", 3), (b"foo2", 4), (b"foo", 5), (b"foo1", 6)] {
            ti.put(key, r(rev));
        }
        for (key, rev) in [(&b"foo1"[..], 7), (b"foo2", 8), (b"foo", 9)] {
            ti.tombstone(key, r(rev)).unwrap();
        }
        ti.put(b"foo", r(10));
        ti.put(b"foo1", rs(10, 1));
        ti
    }

    /// Expected state after compacting build_tree at 1..=10: the revisions left
    /// in the old generation of foo, foo1 and foo2 (empty: generation gone),
    /// then what keep and compact return.
    #[rustfmt::skip]
    fn tree_compact_table() -> Vec<(i64, TreeIndex, HashSet<Revision>, HashSet<Revision>)> {
        let tree = |foo: &[i64], foo1: &[i64], foo2: &[i64]| {
            let revs = |mains: &[i64]| mains.iter().map(|&m| r(m)).collect::<Vec<_>>();
            let old = |created, mains: &[i64]| (!mains.is_empty()).then(|| gen(created, 3, &revs(mains)));
            let with_new = |old: Option<Generation>, new| old.into_iter().chain([new]).collect();
            let mut keys = BTreeMap::new();
            keys.insert(b"foo".to_vec(), ki(r(10), with_new(old(r(1), foo), gen(r(10), 1, &[r(10)]))));
            keys.insert(b"foo1".to_vec(), ki(rs(10, 1), with_new(old(r(2), foo1), gen(rs(10, 1), 1, &[rs(10, 1)]))));
            if let Some(g) = old(r(3), foo2) {
                keys.insert(b"foo2".to_vec(), ki(r(8), vec![g, empty()]));
            }
            TreeIndex { keys }
        };
        vec![
            (1, tree(&[1, 5, 9], &[2, 6, 7], &[3, 4, 8]), set(&[r(1)]), set(&[r(1)])),
            (2, tree(&[1, 5, 9], &[2, 6, 7], &[3, 4, 8]), set(&[r(1), r(2)]), set(&[r(1), r(2)])),
            (3, tree(&[1, 5, 9], &[2, 6, 7], &[3, 4, 8]), set(&[r(1), r(2), r(3)]), set(&[r(1), r(2), r(3)])),
            (4, tree(&[1, 5, 9], &[2, 6, 7], &[4, 8]), set(&[r(1), r(2), r(4)]), set(&[r(1), r(2), r(4)])),
            (5, tree(&[5, 9], &[2, 6, 7], &[4, 8]), set(&[r(2), r(4), r(5)]), set(&[r(2), r(4), r(5)])),
            (6, tree(&[5, 9], &[6, 7], &[4, 8]), set(&[r(6), r(4), r(5)]), set(&[r(6), r(4), r(5)])),
            (7, tree(&[5, 9], &[7], &[4, 8]), set(&[r(4), r(5)]), set(&[r(7), r(4), r(5)])),
            (8, tree(&[5, 9], &[], &[8]), set(&[r(5)]), set(&[r(8), r(5)])),
            (9, tree(&[9], &[], &[]), set(&[]), set(&[r(9)])),
            (10, tree(&[], &[], &[]), set(&[r(10), rs(10, 1)]), set(&[r(10), rs(10, 1)])),
        ]
    }

    #[test]
    fn index_compact_and_keep() {
        let table = tree_compact_table();
        let mut cont = build_tree();
        for i in 1..20 {
            let (_, want, want_keep, want_compact) = &table[(i as usize).min(table.len()) - 1];
            assert_eq!(&cont.compact(i), want_compact, "continuous compact({i})");
            assert_eq!(&cont.keep(i), want_keep, "continuous keep({i})");
            assert_eq!(&cont, want, "continuous index after compact({i})");

            let mut once = build_tree();
            let before = once.clone();
            assert_eq!(&once.keep(i), want_keep, "once keep({i})");
            assert_eq!(once, before, "keep({i}) must not modify");
            assert_eq!(&once.compact(i), want_compact, "once compact({i})");
            assert_eq!(&once, want, "once index after compact({i})");
        }
    }

    /// Start-up replay of what the backend still holds after a compaction must
    /// answer reads and later compactions exactly like the compacted index.
    #[test]
    #[rustfmt::skip]
    fn restore_from_compacted_backend_matches_compacted_index() {
        // (key, revision, is_tombstone, create_revision, version) as stored.
        let records: [(&[u8], Revision, bool, Revision, i64); 11] = [
            (b"foo", r(1), P, r(1), 1), (b"foo1", r(2), P, r(2), 1),
            (b"foo2", r(3), P, r(3), 1), (b"foo2", r(4), P, r(3), 2),
            (b"foo", r(5), P, r(1), 2), (b"foo1", r(6), P, r(2), 2),
            (b"foo1", r(7), T, r(0), 0), (b"foo2", r(8), T, r(0), 0),
            (b"foo", r(9), T, r(0), 0), (b"foo", r(10), P, r(10), 1),
            (b"foo1", rs(10, 1), P, rs(10, 1), 1),
        ];
        for compact_at in 1..12 {
            let mut live = build_tree();
            let kept = live.compact(compact_at);
            let mut rebuilt = TreeIndex::new();
            for &(key, rev, tomb, created, ver) in &records {
                if rev.main <= compact_at && !kept.contains(&rev) {
                    continue;
                }
                if tomb {
                    rebuilt.restore_tombstone(key, rev).unwrap();
                } else {
                    rebuilt.restore(key, created, rev, ver);
                }
            }
            assert_eq!(rebuilt.len(), live.len(), "keys after restore at {compact_at}");
            for at_rev in compact_at..12 {
                let (a, b) = (rebuilt.range(b"", Some(b""), at_rev, 0), live.range(b"", Some(b""), at_rev, 0));
                assert_eq!(a, b, "{compact_at}: range at {at_rev}");
                assert_eq!(rebuilt.keep(at_rev), live.keep(at_rev), "{compact_at}: keep({at_rev})");
                let (mut a, mut b) = (rebuilt.clone(), live.clone());
                assert_eq!(a.compact(at_rev), b.compact(at_rev), "{compact_at}: compact({at_rev})");
            }
        }
    }
}
