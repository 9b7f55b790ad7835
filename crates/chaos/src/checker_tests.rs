use super::*;

fn op(client: usize, key: &str, input: Input, invoke: u64, complete: Option<u64>, output: Option<Output>) -> Operation {
    Operation { client, key: key.into(), input, invoke, complete, output }
}
fn put(c: usize, v: &str, t0: u64, t1: u64) -> Operation {
    op(c, "k", Input::Put(v.into()), t0, Some(t1), Some(Output::Put))
}
fn put_unknown(c: usize, v: &str, t0: u64) -> Operation {
    op(c, "k", Input::Put(v.into()), t0, None, None)
}
fn get(c: usize, v: Option<&str>, t0: u64, t1: u64) -> Operation {
    op(c, "k", Input::Get, t0, Some(t1), Some(Output::Get(v.map(String::from))))
}
fn del(c: usize, deleted: bool, t0: u64, t1: u64) -> Operation {
    op(c, "k", Input::Delete, t0, Some(t1), Some(Output::Delete { deleted }))
}
fn cas(
    c: usize,
    expect: Option<&str>,
    new: &str,
    t0: u64,
    t1: u64,
    succeeded: bool,
    current: Option<&str>,
) -> Operation {
    op(
        c,
        "k",
        Input::Cas { expect: expect.map(String::from), new: new.into() },
        t0,
        Some(t1),
        Some(Output::Cas { succeeded, current: current.map(String::from) }),
    )
}
fn ok(h: &[Operation]) -> bool {
    let r = check(h, Budget::default());
    assert!(r.undecided.is_empty());
    r.linearizable()
}

#[test]
fn empty_and_sequential_histories_pass() {
    assert!(ok(&[]));
    assert!(ok(&[
        get(0, None, 0, 1),
        put(0, "a", 2, 3),
        get(1, Some("a"), 4, 5),
        del(0, true, 6, 7),
        get(1, None, 8, 9)
    ]));
}

#[test]
fn stale_read_is_rejected() {
    // The put completed before the get started: the get must see it.
    assert!(!ok(&[put(0, "a", 0, 10), get(1, None, 20, 30)]));
    // Two reads by different clients, one after the other, must not go back in time.
    assert!(!ok(&[put(0, "a", 0, 100), get(1, Some("a"), 10, 20), get(2, None, 30, 40)]));
}

#[test]
fn concurrent_read_may_see_old_or_new() {
    assert!(ok(&[put(0, "a", 0, 100), get(1, None, 10, 20)]));
    assert!(ok(&[put(0, "a", 0, 100), get(1, Some("a"), 10, 20)]));
    assert!(ok(&[put(0, "a", 0, 100), get(1, None, 10, 20), get(2, Some("a"), 30, 40)]));
}

#[test]
fn lost_write_is_rejected() {
    assert!(!ok(&[put(0, "a", 0, 10), put(1, "b", 20, 30), get(2, Some("a"), 40, 50)]));
    // A read that returns a value nobody wrote.
    assert!(!ok(&[put(0, "a", 0, 10), get(2, Some("z"), 40, 50)]));
}

#[test]
fn cas_violations_are_rejected() {
    // Two create-if-absent txns cannot both succeed.
    assert!(!ok(&[cas(0, None, "a", 0, 10, true, None), cas(1, None, "b", 0, 10, true, None)]));
    // Succeeded although the value did not match.
    assert!(!ok(&[put(0, "a", 0, 10), cas(1, Some("x"), "b", 20, 30, true, None)]));
    // Failed although the value matched, and reported a value that was not there.
    assert!(!ok(&[put(0, "a", 0, 10), cas(1, Some("a"), "b", 20, 30, false, Some("a"))]));
    assert!(!ok(&[put(0, "a", 0, 10), cas(1, Some("q"), "b", 20, 30, false, Some("c"))]));
    // A correct chain passes.
    assert!(ok(&[
        cas(0, None, "a", 0, 10, true, None),
        cas(1, None, "b", 5, 15, false, Some("a")),
        cas(1, Some("a"), "c", 20, 30, true, None),
        get(0, Some("c"), 40, 50),
    ]));
}

#[test]
fn delete_count_is_checked() {
    assert!(!ok(&[del(0, true, 0, 10)]));
    assert!(!ok(&[put(0, "a", 0, 10), del(1, false, 20, 30)]));
    assert!(ok(&[put(0, "a", 0, 10), del(1, true, 5, 30), del(2, false, 6, 31)]));
}

#[test]
fn unknown_write_may_take_effect_late_or_never() {
    // Never: nobody saw it.
    assert!(ok(&[put_unknown(0, "a", 0), get(1, None, 100, 110), get(1, None, 200, 210)]));
    // Late: long after its client gave up.
    assert!(ok(&[put_unknown(0, "a", 0), get(1, None, 100, 110), get(1, Some("a"), 200, 210)]));
    // But once seen, it cannot be undone without another write.
    assert!(!ok(&[put_unknown(0, "a", 0), get(1, Some("a"), 100, 110), get(1, None, 200, 210)]));
    // And it cannot take effect before it was invoked.
    assert!(!ok(&[get(1, Some("a"), 0, 10), put_unknown(0, "a", 20)]));
    // An unknown delete may explain a disappearance.
    let unknown_del = op(2, "k", Input::Delete, 50, None, None);
    assert!(ok(&[put(0, "a", 0, 10), unknown_del.clone(), get(1, None, 100, 110)]));
    assert!(!ok(&[put(0, "a", 0, 10), unknown_del, get(1, None, 100, 110), get(1, Some("a"), 120, 130)]));
    // An unknown CAS takes effect only if its comparison held at that point.
    let unknown_cas = op(2, "k", Input::Cas { expect: Some("x".into()), new: "b".into() }, 20, None, None);
    assert!(!ok(&[put(0, "a", 0, 10), unknown_cas.clone(), get(1, Some("b"), 100, 110)]));
    let unknown_cas = op(2, "k", Input::Cas { expect: Some("a".into()), new: "b".into() }, 20, None, None);
    assert!(ok(&[put(0, "a", 0, 10), unknown_cas, get(1, Some("b"), 100, 110)]));
}

#[test]
fn reads_with_unknown_outcome_and_failed_ops_constrain_nothing() {
    let lost_read = op(1, "k", Input::Get, 20, None, None);
    assert!(ok(&[put(0, "a", 0, 10), lost_read]));
}

#[test]
fn many_unknown_writes_stay_fast() {
    // 60 unknown puts on one key, values never read, then reads interleaved with acknowledged
    // writes: without the canonicalization this is 2^60 subsets.
    let mut h: Vec<Operation> = (0..60).map(|i| put_unknown(i, &format!("u{i}"), i as u64)).collect();
    for i in 0..40u64 {
        let t = 1000 + i * 100;
        h.push(put(100, &format!("w{i}"), t, t + 10));
        h.push(get(101, Some(&format!("w{i}")), t + 20, t + 30));
    }
    let started = Instant::now();
    assert!(ok(&h));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // And a violation among them is still found.
    h.push(get(101, Some("w3"), 100_000, 100_010));
    assert!(!ok(&h));
}

#[test]
fn keys_are_checked_independently_and_counterexample_is_small() {
    let mut h = Vec::new();
    // k1 fine, k2 has a stale read buried among many fine reads.
    for i in 0..30u64 {
        let mut p = put(0, &format!("v{i}"), i * 100, i * 100 + 10);
        p.key = "k1".into();
        h.push(p);
        let mut g = get(1, Some(&format!("v{i}")), i * 100 + 20, i * 100 + 30);
        g.key = "k1".into();
        h.push(g);
        let mut p2 = put(2, &format!("x{i}"), i * 100, i * 100 + 10);
        p2.key = "k2".into();
        h.push(p2);
        let stale = if i == 17 { "x15".to_string() } else { format!("x{i}") };
        let mut g2 = get(3, Some(&stale), i * 100 + 20, i * 100 + 30);
        g2.key = "k2".into();
        h.push(g2);
    }
    let r = check(&h, Budget::default());
    assert_eq!(r.keys_checked, 2);
    assert_eq!(r.violations.len(), 1);
    let cx = &r.violations[0];
    assert_eq!(cx.key, "k2");
    assert_eq!(cx.full_len, 60);
    // All 30 puts stay (removing writes is unsound), but reads shrink to the guilty one plus
    // the one that pins x15 (observed values are what make the stale read stale).
    let reads = cx.ops.iter().filter(|o| o.input == Input::Get).count();
    assert!(reads <= 2, "{cx}");
    // The prefix cut drops what came after the stale read, the window what came well before.
    assert!(cx.ops.len() <= 6, "{cx}");
    let text = cx.to_string();
    assert!(text.contains("\"x15\""), "{text}");
}

#[test]
fn search_budget_gives_undecided_not_a_verdict() {
    let h: Vec<Operation> =
        (0..20).map(|i| put(i, &format!("v{i}"), 0, 1000)).chain([get(50, Some("v3"), 2000, 2001)]).collect();
    assert!(matches!(check_key(&prepare(&h), 5), Verdict::Unknown));
    assert!(matches!(check_key(&prepare(&h), 10_000_000), Verdict::Ok));
}

#[test]
fn window_tries_every_possible_state_at_the_cut() {
    // Two concurrent puts, then reads that see "a" and later "b" with no write between:
    // whichever put came last, one of the reads is wrong.
    let h = [put(0, "a", 0, 10), put(1, "b", 5, 15), get(2, Some("a"), 100, 110), get(2, Some("b"), 120, 130)];
    let r = check(&h, Budget::default());
    assert_eq!(r.violations.len(), 1);
    let cx = &r.violations[0];
    assert_eq!(cx.since, Some(100));
    assert_eq!(cx.initial, vec![Some("a".to_string()), Some("b".to_string())]);
    assert_eq!(cx.ops.len(), 2, "{cx}");
    // Seeing "b" then "a" is fine for neither, "b" then "b" is fine: no violation at all.
    let h = [put(0, "a", 0, 10), put(1, "b", 5, 15), get(2, Some("b"), 100, 110), get(2, Some("b"), 120, 130)];
    assert!(ok(&h));
}

#[test]
fn window_keeps_unknown_writes_from_before_the_cut() {
    // The unknown put of "u" (invoked early) explains the late read: no violation, even
    // though a cut at 100 would leave only acknowledged "a" as the state.
    let h = [put(0, "a", 0, 10), put_unknown(1, "u", 5), get(2, Some("a"), 100, 110), get(2, Some("u"), 120, 130)];
    assert!(ok(&h));
    // Reading "u" and then "a" again is a violation.
    let h = [put(0, "a", 0, 10), put_unknown(1, "u", 5), get(2, Some("u"), 100, 110), get(2, Some("a"), 120, 130)];
    let r = check(&h, Budget::default());
    assert_eq!(r.violations.len(), 1, "{r:?}");
    assert!(r.violations[0].ops.iter().any(|o| o.output.is_none()), "{}", r.violations[0]);
}
