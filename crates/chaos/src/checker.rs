//! Linearizability checker for histories of single-key etcd operations.
//!
//! Algorithm: Wing & Gong's search as improved by Lowe ("Testing for linearizability", 2017):
//! walk the time-ordered list of call/return events, linearize a pending call as soon as the
//! model accepts it, backtrack when a return is reached whose call is not yet linearized, and
//! memoize each visited (set of linearized operations, model state) so that no configuration is
//! explored twice. The history is first split per key (P-compositionality, Horn & Kroening
//! 2015): linearizability is local, so the whole history is linearizable iff every key's
//! sub-history is, and each of those is small. This is what Porcupine and Knossos do.
//!
//! Why our own and not a crate: the Rust crates found (`lincheck` runs loom on in-process data
//! structures; `todc-utils`' WGL checker has no per-key partitioning, no operations with unknown
//! outcome and no counterexample) do not fit a recorded distributed-systems history; the
//! algorithm is short and is covered by the tests at the end of this file.
//!
//! Model: one etcd key holding a value or nothing. The workload writes a unique value per write,
//! so values identify writes and revisions need not be modelled here (the runner checks revisions
//! separately: per-client monotonic, and one mod_revision per written value).
//!
//! Unknown outcomes (timeout, connection lost): a write whose outcome is unknown may take effect
//! at any time after its invocation, or never; it is given an infinite return time and an
//! unconstrained output. "Never" needs no special case: such an operation can always be
//! linearized last, where it affects nothing observed. Reads with unknown outcome constrain
//! nothing and are dropped, as are writes that definitely failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a client asked for, on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Input {
    Get,
    Put(String),
    Delete,
    /// Txn: if value(key) == expect (None: the key does not exist) then put(new) else get(key).
    Cas {
        expect: Option<String>,
        new: String,
    },
}

/// What the server answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Get(Option<String>),
    Put,
    Delete {
        deleted: bool,
    },
    /// `current` is what the failure branch's range read returned (None when it succeeded).
    Cas {
        succeeded: bool,
        current: Option<String>,
    },
}

/// One operation of a history. Times are nanoseconds on one monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub input: Input,
    pub invoke: u64,
    /// None: the outcome is unknown (see the module comment).
    pub complete: Option<u64>,
    /// None exactly when `complete` is None.
    pub output: Option<Output>,
}

impl Operation {
    /// True when the operation cannot change the state whatever its outcome: removing it from a
    /// non-linearizable history can only remove constraints, so if the rest is still not
    /// linearizable, the rest alone proves the violation (used to shrink counterexamples).
    fn is_read_only(&self) -> bool {
        matches!(
            (&self.input, &self.output),
            (Input::Get, _)
                | (Input::Cas { .. }, Some(Output::Cas { succeeded: false, .. }))
                | (Input::Delete, Some(Output::Delete { deleted: false }))
        )
    }
}

type State = Option<String>;

/// The sequential specification: the state after `op`, or None if `op`'s output is impossible
/// in `state`. An unknown output accepts whatever the operation would have returned.
fn step(state: &State, input: &Input, output: Option<&Output>) -> Option<State> {
    match (input, output) {
        (Input::Get, Some(Output::Get(v))) => (v == state).then(|| state.clone()),
        (Input::Get, None) => Some(state.clone()),
        (Input::Put(v), None | Some(Output::Put)) => Some(Some(v.clone())),
        (Input::Delete, None) => Some(None),
        (Input::Delete, Some(Output::Delete { deleted })) => (*deleted == state.is_some()).then_some(None),
        (Input::Cas { expect, new }, out) => {
            let matches = expect == state;
            match out {
                None => Some(if matches { Some(new.clone()) } else { state.clone() }),
                Some(Output::Cas { succeeded: true, .. }) => matches.then(|| Some(new.clone())),
                Some(Output::Cas { succeeded: false, current }) => {
                    (!matches && current == state).then(|| state.clone())
                }
                Some(_) => None,
            }
        }
        _ => None,
    }
}

/// Outcome of checking one key.
#[derive(Debug)]
pub enum Verdict {
    Ok,
    /// Not linearizable. `longest` is the longest sequence of operations (indices into the
    /// key's history) the search could linearize; nothing pending after it was acceptable.
    Violation {
        longest: Vec<usize>,
    },
    /// The search hit its budget without deciding.
    Unknown,
}

/// The result for a whole history.
#[derive(Debug, Default)]
pub struct Report {
    pub keys_checked: usize,
    pub ops_checked: usize,
    pub violations: Vec<Counterexample>,
    pub undecided: Vec<String>,
}

impl Report {
    pub fn linearizable(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }
}

/// A key whose sub-history is not linearizable, shrunk as far as the budget allowed.
#[derive(Debug)]
pub struct Counterexample {
    pub key: String,
    /// The key's full sub-history size.
    pub full_len: usize,
    /// A sub-history that is still not linearizable (reads removed where possible), by invoke time.
    pub ops: Vec<Operation>,
    /// Indices into `ops`: the longest linearizable prefix found in `ops` (from `initial[0]`).
    pub longest: Vec<usize>,
    /// The states the key may have had when `ops` begin (just `None`: the empty store).
    pub initial: Vec<Option<String>>,
    /// Time (ns) where `ops` were cut from the earlier history, if they were.
    pub since: Option<u64>,
}

/// Limits so that a pathological history cannot hang the tool.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Search steps per key check.
    pub steps: u64,
    /// Wall time spent shrinking one counterexample.
    pub shrink_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { steps: 20_000_000, shrink_time: Duration::from_secs(10) }
    }
}

/// Drops what constrains nothing (reads with unknown outcome), normalizes unknown writes.
pub fn prepare(history: &[Operation]) -> Vec<Operation> {
    history
        .iter()
        .filter(|op| !(op.output.is_none() && matches!(op.input, Input::Get)))
        .map(|op| {
            let mut op = op.clone();
            if op.output.is_none() {
                op.complete = None;
            }
            op
        })
        .collect()
}

/// Checks a whole history: per key, WGL with memoization; shrinks each violation.
pub fn check(history: &[Operation], budget: Budget) -> Report {
    let mut by_key: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
    for op in prepare(history) {
        by_key.entry(op.key.clone()).or_default().push(op);
    }
    let mut report = Report::default();
    for (key, ops) in by_key {
        report.keys_checked += 1;
        report.ops_checked += ops.len();
        match check_key(&ops, budget.steps) {
            Verdict::Ok => {}
            Verdict::Unknown => report.undecided.push(key),
            Verdict::Violation { longest } => {
                report.violations.push(shrink(&key, ops, longest, budget));
            }
        }
    }
    // Smallest first: the easiest proof to read.
    report.violations.sort_by_key(|c| c.ops.len());
    report
}

/// Is `ops` a violation from every one of the `initial` states? Returns the longest partial
/// linearization from the first of them.
fn fails_from_all(ops: &[Operation], initial: &[State], steps: u64) -> Option<Vec<usize>> {
    let mut first = None;
    for init in initial {
        match check_key_from(ops, init, steps) {
            Verdict::Violation { longest } => {
                first.get_or_insert(longest);
            }
            _ => return None,
        }
    }
    first
}

/// The prefix of a history up to time `t` (Lowe's prefix closure: linearizability of a
/// history implies that of each prefix): operations invoked after `t` are dropped, those still
/// running at `t` get an unknown outcome.
fn prefix(ops: &[Operation], t: u64) -> Vec<Operation> {
    let cut: Vec<Operation> = ops
        .iter()
        .filter(|op| op.invoke <= t)
        .map(|op| {
            let mut op = op.clone();
            if op.complete.is_none_or(|c| c > t) {
                op.complete = None;
                op.output = None;
            }
            op
        })
        .collect();
    prepare(&cut)
}

/// Cuts the history before a quiescent time `t0` (every operation invoked earlier has
/// returned, except unknown ones, which move to the suffix since they may take effect later).
/// The state at `t0` is then the value of one of the "last" writes before it (those that no
/// other earlier write follows in real time), or absent if nothing was written: if the suffix
/// fails from each of these states, it proves the violation alone.
fn window(ops: &[Operation], t0: u64) -> Option<(Vec<Operation>, Vec<State>)> {
    let (before, after): (Vec<&Operation>, Vec<&Operation>) =
        ops.iter().partition(|op| op.invoke < t0 && op.complete.is_some());
    if before.iter().any(|op| op.complete.is_some_and(|c| c >= t0)) {
        return None;
    }
    let written = |op: &Operation| -> Option<State> {
        match (&op.input, &op.output) {
            (Input::Put(v), Some(Output::Put)) => Some(Some(v.clone())),
            (Input::Cas { new, .. }, Some(Output::Cas { succeeded: true, .. })) => Some(Some(new.clone())),
            (Input::Delete, Some(Output::Delete { deleted: true })) => Some(None),
            _ => None,
        }
    };
    let writes: Vec<&Operation> = before.iter().copied().filter(|op| written(op).is_some()).collect();
    let mut initial: Vec<State> = writes
        .iter()
        .filter(|w| !writes.iter().any(|w2| w2.invoke > w.complete.expect("completed")))
        .filter_map(|w| written(w))
        .collect();
    if writes.is_empty() {
        initial.push(None);
    }
    initial.sort();
    initial.dedup();
    Some((after.into_iter().cloned().collect(), initial))
}

/// Shrinks a violation, each step keeping a history that still proves it:
/// 1. the shortest failing prefix (binary search over invoke times);
/// 2. the latest quiescent cut whose suffix fails from every possible state at the cut;
/// 3. read-only operations removed (chunks, then single ones): removing a read only removes
///    constraints, so if the rest still fails it proves the violation alone.
fn shrink(key: &str, ops: Vec<Operation>, longest: Vec<usize>, budget: Budget) -> Counterexample {
    let full_len = ops.len();
    let started = Instant::now();
    let in_time = || started.elapsed() < budget.shrink_time;
    let mut times: Vec<u64> = ops.iter().map(|op| op.invoke).collect();
    times.sort();
    times.dedup();
    let (mut lo, mut hi) = (0, times.len() - 1);
    let mut best = (ops, longest, vec![None], None);
    if fails_from_all(&prefix(&best.0, times[hi]), &[None], budget.steps).is_some() {
        while lo < hi && in_time() {
            let mid = (lo + hi) / 2;
            match fails_from_all(&prefix(&best.0, times[mid]), &[None], budget.steps) {
                Some(_) => hi = mid,
                None => lo = mid + 1,
            }
        }
        let cut = prefix(&best.0, times[hi]);
        if let Some(l) = fails_from_all(&cut, &[None], budget.steps) {
            best = (cut, l, vec![None], None);
        }
    }
    let mut cuts: Vec<u64> = best.0.iter().map(|op| op.invoke).collect();
    cuts.sort();
    cuts.dedup();
    for &t0 in cuts.iter().rev().skip(1) {
        if !in_time() {
            break;
        }
        if let Some((suffix, initial)) = window(&best.0, t0) {
            if let Some(l) = fails_from_all(&suffix, &initial, budget.steps) {
                best = (suffix, l, initial, Some(t0));
                break;
            }
        }
    }
    let (mut ops, mut longest, initial, since) = best;
    let mut chunk = ops.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < ops.len() && in_time() {
            let end = (i + chunk).min(ops.len());
            if ops[i..end].iter().all(Operation::is_read_only) {
                let mut trial = ops.clone();
                trial.drain(i..end);
                if let Some(l) = fails_from_all(&trial, &initial, budget.steps) {
                    ops = trial;
                    longest = l;
                    continue;
                }
            }
            i = end;
        }
        if chunk == 1 || !in_time() {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    // Present by invoke time; remap the longest linearization accordingly.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].invoke, i));
    let mut new_index = vec![0; ops.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let sorted = order.iter().map(|&i| ops[i].clone()).collect();
    Counterexample {
        key: key.to_string(),
        full_len,
        ops: sorted,
        longest: longest.iter().map(|&i| new_index[i]).collect(),
        initial,
        since,
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;
/// Stands for every written value that no operation ever observed (see [`canonical_inputs`]).
const UNOBSERVED: &str = "\u{0}unobserved";

/// Keeps the search from exploding on operations with unknown outcome (each stays pending to
/// the end, so k of them could be linearized in 2^k subsets):
/// 1. Every written value that no read, failed-CAS read or CAS expectation ever returned is
///    replaced by one placeholder. Sound both ways: nothing compares against such a value, so
///    any linearization of one history is one of the other.
/// 2. Among unknown-outcome operations with the same (canonical) input, the one invoked earlier
///    is linearized first (`must_follow`). Exchange argument: both have unconstrained outputs and
///    no return time, so the earlier-invoked one can take the later one's place in any
///    linearization. Subsets collapse to prefixes: k + 1 configurations instead of 2^k.
fn canonical_inputs(ops: &[Operation]) -> (Vec<Input>, Vec<usize>, HashSet<String>) {
    let mut observed: HashSet<String> = HashSet::new();
    for op in ops {
        if let Input::Cas { expect: Some(e), .. } = &op.input {
            observed.insert(e.clone());
        }
        match &op.output {
            Some(Output::Get(Some(v))) | Some(Output::Cas { current: Some(v), .. }) => {
                observed.insert(v.clone());
            }
            _ => {}
        }
    }
    let canon = |v: &String| if observed.contains(v) { v.clone() } else { UNOBSERVED.to_string() };
    let inputs: Vec<Input> = ops
        .iter()
        .map(|op| match &op.input {
            Input::Put(v) => Input::Put(canon(v)),
            Input::Cas { expect, new } => Input::Cas { expect: expect.clone(), new: canon(new) },
            other => other.clone(),
        })
        .collect();
    let mut unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].output.is_none()).collect();
    unknown.sort_by_key(|&i| (ops[i].invoke, i));
    let mut must_follow = vec![NIL; ops.len()];
    let mut last_with: HashMap<&Input, usize> = HashMap::new();
    for &i in &unknown {
        if let Some(prev) = last_with.insert(&inputs[i], i) {
            must_follow[i] = prev;
        }
    }
    (inputs, must_follow, observed)
}

/// The WGL/Lowe search on one key's operations (already prepared).
pub fn check_key(ops: &[Operation], max_steps: u64) -> Verdict {
    check_key_from(ops, &None, max_steps)
}

/// [`check_key`] from a given initial state of the key.
fn check_key_from(ops: &[Operation], initial: &State, max_steps: u64) -> Verdict {
    // Events: node 0 is the list head; node 1 + 2i is op i's call, 2 + 2i its return.
    let n = ops.len();
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n); // (time, is_return, op)
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, false, i));
        events.push((op.complete.unwrap_or(u64::MAX), true, i));
    }
    // Calls before returns at equal times: treats touching operations as concurrent (the
    // conservative choice when clocks are coarse).
    events.sort_by_key(|&(t, is_ret, op)| (t, is_ret, op));
    let node_of = |i: usize, is_ret: bool| 1 + 2 * i + is_ret as usize;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = HEAD;
    for &(_, is_ret, op) in &events {
        let node = node_of(op, is_ret);
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    let op_of = |node: usize| (node - 1) / 2;
    let (inputs, must_follow, observed) = canonical_inputs(ops);
    let is_return = |node: usize| (node - 1) % 2 == 1;

    fn lift(next: &mut [usize], prev: &mut [usize], node: usize) {
        next[prev[node]] = next[node];
        if next[node] != NIL {
            prev[next[node]] = prev[node];
        }
    }
    fn unlift(next: &mut [usize], prev: &mut [usize], node: usize) {
        next[prev[node]] = node;
        if next[node] != NIL {
            prev[next[node]] = node;
        }
    }

    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    // An initial value nobody observes is the placeholder too (see canonical_inputs).
    let mut state: State =
        initial.as_ref().map(|v| if observed.contains(v) { v.clone() } else { UNOBSERVED.to_string() });
    let mut entry = next[HEAD];
    let mut steps = 0u64;
    while next[HEAD] != NIL {
        steps += 1;
        if steps > max_steps {
            return Verdict::Unknown;
        }
        if !is_return(entry) {
            let i = op_of(entry);
            let after = must_follow[i];
            if after != NIL && linearized[after / 64] & (1 << (after % 64)) == 0 {
                entry = next[entry];
                continue;
            }
            if let Some(new_state) = step(&state, &inputs[i], ops[i].output.as_ref()) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), new_state.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, new_state)));
                    if stack.len() > longest.len() {
                        longest = stack.iter().map(|&(e, _)| op_of(e)).collect();
                    }
                    lift(&mut next, &mut prev, entry);
                    lift(&mut next, &mut prev, entry + 1);
                    entry = next[HEAD];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // A return whose call is still pending: some earlier choice was wrong.
            let Some((call, old_state)) = stack.pop() else {
                return Verdict::Violation { longest };
            };
            let i = op_of(call);
            linearized[i / 64] &= !(1 << (i % 64));
            state = old_state;
            unlift(&mut next, &mut prev, call + 1);
            unlift(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    Verdict::Ok
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Get => write!(f, "get"),
            Input::Put(v) => write!(f, "put {v:?}"),
            Input::Delete => write!(f, "delete"),
            Input::Cas { expect: Some(e), new } => write!(f, "cas {e:?} -> {new:?}"),
            Input::Cas { expect: None, new } => write!(f, "cas <absent> -> {new:?}"),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Get(Some(v)) => write!(f, "{v:?}"),
            Output::Get(None) => write!(f, "<absent>"),
            Output::Put => write!(f, "ok"),
            Output::Delete { deleted } => write!(f, "deleted={deleted}"),
            Output::Cas { succeeded: true, .. } => write!(f, "succeeded"),
            Output::Cas { succeeded: false, current: Some(v) } => write!(f, "failed, saw {v:?}"),
            Output::Cas { succeeded: false, current: None } => write!(f, "failed, saw <absent>"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        match (self.complete, &self.output) {
            (Some(c), Some(out)) => write!(
                f,
                "client {:>2} [{:>10.3} ms .. {:>10.3} ms] {} {} => {}",
                self.client,
                ms(self.invoke),
                ms(c),
                self.key,
                self.input,
                out
            ),
            _ => write!(
                f,
                "client {:>2} [{:>10.3} ms ..          ?   ] {} {} => unknown (error/timeout)",
                self.client,
                ms(self.invoke),
                self.key,
                self.input
            ),
        }
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: not linearizable; {} of its {} operations suffice to show it:",
            self.key,
            self.ops.len(),
            self.full_len
        )?;
        let show = |s: &State| s.as_deref().map(|v| format!("{v:?}")).unwrap_or("<absent>".into());
        if let Some(t0) = self.since {
            let states: Vec<String> = self.initial.iter().map(show).collect();
            writeln!(
                f,
                "  (cut at {:.3} ms, when no operation with a known outcome was in flight: the key then held one of {} -- the \
                 last writes before -- and the operations below fail from each of them)",
                t0 as f64 / 1e6,
                states.join(", ")
            )?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  #{i:<3} {op}")?;
        }
        let mut state: State = self.initial.first().cloned().flatten();
        write!(f, "  longest linearizable order found:")?;
        for &i in &self.longest {
            write!(f, " #{i}")?;
            let op = &self.ops[i];
            state = step(&state, &op.input, op.output.as_ref()).unwrap_or(state);
        }
        writeln!(f)?;
        writeln!(f, "  value after it: {}", show(&state))?;
        write!(f, "  no remaining operation can come next consistently with its result and real time")
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
