//! The fault schedule: drawn up front from the seed, so that a failing run can be replayed
//! and its report can print what was planned. Which member "the leader" is gets resolved when
//! the fault fires; the run log records the member actually hit.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// kill -9, restart after the hold time.
    Kill,
    /// SIGSTOP, SIGCONT after the hold time (longer than the election timeout).
    Pause,
    /// Network partition (members in namespaces: needs root and nft), healed after the hold
    /// time: leader or a follower isolated, a largest-minority split, or a bridge.
    Partition,
    /// MemberRemove of one member (the leader or a follower) through the Cluster API; after the
    /// hold, MemberAdd of a fresh member (new name, new data dir, `--initial-cluster-state
    /// existing`) that must catch up before the next fault.
    Membership,
    /// Wall-clock jump (minutes to hours, forward or back) of a member run under libfaketime,
    /// undone (a second jump) after the hold. Monotonic time is left alone.
    Clock,
    /// Every kind above.
    All,
}

impl FaultKind {
    /// The kinds a list names (`all` expands to every kind), without duplicates.
    pub fn expand(kinds: &[FaultKind]) -> Vec<FaultKind> {
        use FaultKind::*;
        let every = [Kill, Pause, Partition, Membership, Clock];
        let mut out = Vec::new();
        for k in kinds {
            for k in if *k == All { &every[..] } else { std::slice::from_ref(k) } {
                if !out.contains(k) {
                    out.push(*k);
                }
            }
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    /// One follower, picked at random.
    Follower,
    /// A majority at once (the leader among them), so the cluster is unavailable meanwhile.
    Majority,
    /// Any one member.
    Any,
}

#[derive(Clone, Debug)]
pub struct Step {
    /// Offset from the start of the workload.
    pub at: Duration,
    pub kind: FaultKind,
    pub target: Target,
    /// How long the fault lasts before it is undone.
    pub hold: Duration,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FaultKind::Kill => "kill -9 + restart",
            FaultKind::Pause => "SIGSTOP + SIGCONT",
            FaultKind::Partition => "partition",
            FaultKind::Membership => "member remove + add a fresh one",
            FaultKind::Clock => "wall-clock jump (and back)",
            FaultKind::All => "every fault",
        };
        let whom = match (self.kind, self.target) {
            (_, Target::Leader) => "the leader",
            (_, Target::Follower) => "a follower",
            (FaultKind::Partition, Target::Majority) => "as a bridge (only the leader hears both halves)",
            (FaultKind::Clock, Target::Majority) => "on a majority (the leader included), each its own",
            (_, Target::Majority) => "a majority (with the leader)",
            (FaultKind::Partition, Target::Any) => "the largest minority around any member",
            (_, Target::Any) => "any member",
        };
        write!(f, "at {:>6.2}s {what} {whom} for {:.2}s", self.at.as_secs_f64(), self.hold.as_secs_f64())
    }
}

/// Faults one after another from 1 s in until `duration`, each held 1.2–3 election timeouts
/// (a pause shorter than one would not trigger an election), with 0.5–2 s of calm between
/// faults so that the cluster also gets to show it recovers.
pub fn generate(seed: u64, kinds: &[FaultKind], duration: Duration, election_timeout: Duration) -> Vec<Step> {
    let kinds = FaultKind::expand(kinds);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    if kinds.is_empty() {
        return steps;
    }
    let mut t = Duration::from_secs(1);
    loop {
        let hold = election_timeout.mul_f64(rng.gen_range(1.2..3.0));
        if t + hold > duration {
            break;
        }
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let mut target = match rng.gen_range(0..10) {
            0..=3 => Target::Leader,
            4..=6 => Target::Follower,
            7 => Target::Majority,
            _ => Target::Any,
        };
        // One membership change at a time, as etcd requires: never a majority at once.
        if kind == FaultKind::Membership && target == Target::Majority {
            target = Target::Leader;
        }
        steps.push(Step { at: t, kind, target, hold });
        t += hold + Duration::from_millis(rng.gen_range(500..2000));
    }
    steps
}

/// Resolves a target to 0-based member indices, given the current leader (if any).
pub fn resolve(target: Target, leader: Option<usize>, members: usize, rng: &mut StdRng) -> Vec<usize> {
    let leader = leader.unwrap_or_else(|| rng.gen_range(0..members));
    let others: Vec<usize> = (0..members).filter(|&i| i != leader).collect();
    match target {
        Target::Leader => vec![leader],
        Target::Follower => vec![others[rng.gen_range(0..others.len())]],
        Target::Any => vec![rng.gen_range(0..members)],
        Target::Majority => {
            let mut out = vec![leader];
            let mut rest = others;
            while out.len() < members / 2 + 1 {
                out.push(rest.remove(rng.gen_range(0..rest.len())));
            }
            out
        }
    }
}

/// The groups of a partition: the targets cut off from the rest; for `Any`, the largest
/// minority around the target against the rest; for `Majority`, a bridge: two halves that only the leader hears both of (it keeps leading with votes
/// from either side, while the halves cannot talk to each other).
pub fn partition_groups(target: Target, targets: &[usize], members: usize) -> Vec<Vec<usize>> {
    let rest: Vec<usize> = (0..members).filter(|i| !targets.contains(i)).collect();
    match target {
        Target::Majority => {
            let bridge = targets[0];
            let others: Vec<usize> = (0..members).filter(|&i| i != bridge).collect();
            let (a, b) = others.split_at(others.len() / 2);
            vec![[&[bridge], a].concat(), [&[bridge], b].concat()]
        }
        // The largest minority around the chosen member (with 5: a 2/3 split, possibly with
        // the leader on the minority side).
        Target::Any => {
            let minority: Vec<usize> = (0..members / 2).map(|k| (targets[0] + k) % members).collect();
            let majority = (0..members).filter(|i| !minority.contains(i)).collect();
            vec![minority, majority]
        }
        _ => vec![targets.to_vec(), rest],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule_and_holds_exceed_election_timeout() {
        let et = Duration::from_millis(1000);
        let a = generate(7, &[FaultKind::Kill, FaultKind::Pause], Duration::from_secs(30), et);
        let b = generate(7, &[FaultKind::Kill, FaultKind::Pause], Duration::from_secs(30), et);
        assert_eq!(
            a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            b.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
        assert!(a.len() >= 5);
        assert!(a.iter().all(|s| s.hold > et && s.at + s.hold <= Duration::from_secs(30)));
    }

    #[test]
    fn all_expands_and_membership_is_one_member() {
        let kinds = FaultKind::expand(&[FaultKind::Kill, FaultKind::All]);
        assert_eq!(kinds.len(), 5);
        assert!(!kinds.contains(&FaultKind::All));
        let steps = generate(3, &[FaultKind::Membership], Duration::from_secs(120), Duration::from_secs(1));
        assert!(steps.iter().all(|s| s.kind == FaultKind::Membership && s.target != Target::Majority));
    }

    #[test]
    fn majority_includes_leader() {
        let mut rng = StdRng::seed_from_u64(1);
        for n in [3, 5] {
            let m = resolve(Target::Majority, Some(2), n, &mut rng);
            assert_eq!(m.len(), n / 2 + 1);
            assert!(m.contains(&2));
        }
        assert!(!resolve(Target::Follower, Some(0), 3, &mut rng).contains(&0));
    }

    #[test]
    fn partition_shapes() {
        assert_eq!(partition_groups(Target::Leader, &[1], 3), vec![vec![1], vec![0, 2]]);
        assert_eq!(partition_groups(Target::Majority, &[2, 0], 5), vec![vec![2, 0, 1], vec![2, 3, 4]]);
        assert_eq!(partition_groups(Target::Any, &[4], 5), vec![vec![4, 0], vec![1, 2, 3]]);
        assert_eq!(partition_groups(Target::Any, &[1], 3), vec![vec![1], vec![0, 2]]);
    }
}
