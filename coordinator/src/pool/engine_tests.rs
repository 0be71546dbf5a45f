//! The engine's rules, one by one: events in, actions out, no process and no sleep. Time is
//! an `Instant` moved by hand.

use super::*;
use crate::pool::{PoolConfig, WorkerCommand};
use powerpool_shared::codec::push_record;

fn config(workers: usize) -> PoolConfig {
    let command = WorkerCommand { program: "worker".into(), args: Vec::new(), env: Vec::new() };
    PoolConfig { workers, ..PoolConfig::new(command) }
}

fn t0() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Brings every spawned worker up (spawned, then ready) and returns the actions that follow.
fn bring_up(e: &mut Engine, now: Instant) -> Vec<Action> {
    let mut all = Vec::new();
    let mut spawned: Vec<u64> = Vec::new();
    loop {
        let actions = e.take_actions();
        if actions.is_empty() && spawned.is_empty() {
            return all;
        }
        for a in &actions {
            if let Action::Spawn { id } = a {
                spawned.push(*id);
            }
        }
        all.extend(actions);
        for id in spawned.drain(..) {
            e.handle(Event::Spawned { id, pid: 1000 + id as u32 }, now);
            e.handle(Event::Ready { id }, now);
        }
    }
}

/// The (worker, first, end, tag) of each unit sent.
fn sends(actions: &[Action], chunks: &Chunks) -> Vec<(u64, u64, u64, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { id, unit: Dispatch::Run(r) } => {
                let first = chunks.offset_of(r.start, 0, u64::MAX).expect("in range");
                let end = first + r.len();
                Some((*id, first, end, r.chunk))
            }
            Action::Send { id, unit: Dispatch::Items { tag, first, items } } => {
                Some((*id, *first, *first + items.len() as u64, *tag))
            }
            _ => None,
        })
        .collect()
}

fn releases(actions: &[Action]) -> Vec<(u64, u64, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Release(r) => Some((r.first, r.end, matches!(r.outcome, Outcome::Done(_)))),
            _ => None,
        })
        .collect()
}

/// The workers told to shut down.
fn shutdowns(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| if let Action::Shutdown { id } = a { Some(*id) } else { None })
        .collect()
}

/// A `lines` output of `n` items.
fn lines(n: u64) -> Bytes {
    Bytes::from("0\n".repeat(n as usize))
}

fn range(items: i64, size: u64, workers: usize) -> (Engine, Chunks) {
    let chunks = Chunks::new(0, items, size);
    (Engine::range(chunks, Format::Lines, config(workers), true, t0()), chunks)
}

#[test]
fn never_more_workers_than_chunks_and_two_units_each() {
    let (mut e, chunks) = range(30, 10, 8);
    let now = t0();
    let actions = bring_up(&mut e, now);
    let spawned = actions.iter().filter(|a| matches!(a, Action::Spawn { .. })).count();
    assert_eq!(spawned, 3, "3 chunks, so 3 workers of the 8 asked for");
    let sent = sends(&actions, &chunks);
    assert_eq!(sent.len(), 3, "every chunk went out: {sent:?}");
    let (mut e, chunks) = range(1000, 10, 2);
    let sent = sends(&bring_up(&mut e, now), &chunks);
    let per_worker = |id| sent.iter().filter(|s| s.0 == id).count();
    assert_eq!((per_worker(0), per_worker(1)), (2, 2), "a pipeline of two each: {sent:?}");
}

#[test]
fn new_chunks_stay_within_a_window_of_what_was_consumed() {
    let (mut e, chunks) = range(1000, 10, 2);
    let now = t0();
    let mut sent = sends(&bring_up(&mut e, now), &chunks);
    // Answer everything that is sent, consuming nothing: dispatch stops at the window
    // (2 workers × (2 + 1) = 6 chunks).
    let mut total = sent.len();
    while let Some((id, first, end, tag)) = sent.pop() {
        e.handle(
            Event::Done { id, tag, items: end - first, output: lines(end - first), rss: None },
            now,
        );
        let more = sends(&e.take_actions(), &chunks);
        total += more.len();
        sent.extend(more);
    }
    assert_eq!(total, 6, "6 chunks went out, then nothing until the consumer moves");
    e.handle(Event::Consumed(10), now);
    assert_eq!(sends(&e.take_actions(), &chunks).len(), 1, "one chunk consumed, one more sent");
}

#[test]
fn outputs_are_released_in_input_order() {
    let (mut e, chunks) = range(20, 10, 2);
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    let (a, b) = (sent[0], sent[1]);
    e.handle(Event::Done { id: b.0, tag: b.3, items: 10, output: lines(10), rss: None }, now);
    assert_eq!(releases(&e.take_actions()), vec![]);
    e.handle(Event::Done { id: a.0, tag: a.3, items: 10, output: lines(10), rss: None }, now);
    assert_eq!(releases(&e.take_actions()), vec![(0, 10, true), (10, 20, true)]);
    assert!(matches!(e.take_end(), Some(Ok(()))));
}

#[test]
fn an_answer_that_does_not_fit_its_unit_ends_the_worker() {
    let (mut e, chunks) = range(10, 10, 1);
    let now = t0();
    let (id, _, _, tag) = sends(&bring_up(&mut e, now), &chunks)[0];
    e.handle(
        Event::Done { id, tag, items: 10, output: Bytes::from_static(b"1\n"), rss: None },
        now,
    );
    assert_eq!(e.take_actions(), vec![Action::Kill { id }]);
    e.handle(Event::Done { id, tag: 99, items: 10, output: lines(10), rss: None }, now);
    assert_eq!(e.take_actions(), vec![Action::Kill { id }], "an unknown tag too");
}

#[test]
fn a_death_blames_the_running_unit_and_requeues_the_queued_one_without_blame() {
    let (mut e, chunks) = range(1000, 10, 1);
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(sent.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), vec![(0, 10), (10, 20)]);
    e.handle(Event::Exited { id: 0, exit: Exit::Signal(9), note: None }, now);
    let actions = e.take_actions();
    let logged: Vec<&str> = actions
        .iter()
        .filter_map(|a| if let Action::Log(l) = a { Some(l.outcome.as_str()) } else { None })
        .collect();
    assert_eq!(logged.len(), 2);
    assert!(logged[0].starts_with("requeued"), "{logged:?}");
    assert!(logged[1].starts_with("died: killed by SIGKILL"), "{logged:?}");
    assert_eq!(e.stats.restarts, 1);
    assert_eq!(e.stats.retried, 1, "only the running unit counts as a retry");
    // The first death is replaced at once.
    assert_eq!(e.next_timer(), Some(now));
    e.handle(Event::Tick, now);
    let sent = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(sent.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), vec![(0, 10), (10, 20)]);
    let failures: Vec<u32> = e.workers[&1].in_flight.iter().map(|f| f.unit.failures).collect();
    assert_eq!(failures, vec![1, 0], "blamed once, and not at all");
}

#[test]
fn deaths_in_a_row_wait_longer_before_the_replacement() {
    let (mut e, chunks) = range(1000, 10, 1);
    let now = t0();
    bring_up(&mut e, now);
    e.handle(Event::Exited { id: 0, exit: Exit::Signal(11), note: None }, now);
    e.handle(Event::Tick, now);
    bring_up(&mut e, now);
    e.handle(Event::Exited { id: 1, exit: Exit::Signal(11), note: None }, now);
    assert_eq!(e.next_timer(), Some(now + ms(1)), "the second death in a row waits 1 ms");
    e.handle(Event::Tick, now);
    assert!(e.take_actions().iter().all(|a| !matches!(a, Action::Spawn { .. })), "not yet");
    e.handle(Event::Tick, now + ms(1));
    assert!(sends(&bring_up(&mut e, now), &chunks).len() == 2, "replaced after the wait");
}

#[test]
fn a_caught_panic_cuts_its_item_out_at_once() {
    // Three chunks for one worker: the third is not out yet, so the worker is not released.
    let (mut e, chunks) = range(30, 10, 1);
    let now = t0();
    let (id, _, _, tag) = sends(&bring_up(&mut e, now), &chunks)[0];
    let failed = ChunkFailed { chunk: tag, item: Some(4), reason: "task panicked: boom".into() };
    e.handle(Event::Failed { id, failed }, now);
    let sent = sends(&e.take_actions(), &chunks);
    assert_eq!(sent.iter().map(|s| (s.0, s.1, s.2)).collect::<Vec<_>>(), vec![(0, 0, 4)]);
    assert!(e.workers.contains_key(&0), "the worker stays up");
}

#[test]
fn a_unit_that_fails_on_a_released_worker_runs_again_on_a_new_one() {
    // One chunk, one worker: it is out at once, so the worker is told to finish behind it.
    let (mut e, chunks) = range(10, 10, 1);
    let now = t0();
    let actions = bring_up(&mut e, now);
    let (id, _, _, tag) = sends(&actions, &chunks)[0];
    assert_eq!(shutdowns(&actions), vec![0], "released behind its unit: {actions:?}");
    let failed = ChunkFailed { chunk: tag, item: Some(4), reason: "task panicked: boom".into() };
    e.handle(Event::Failed { id, failed }, now);
    // Worker 0 will exit after its queue: the cut pieces need a worker of their own.
    let sent = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(
        sent.iter().map(|s| (s.0, s.1, s.2)).collect::<Vec<_>>(),
        vec![(1, 0, 4), (1, 4, 5)]
    );
    e.handle(Event::Exited { id: 0, exit: Exit::Code(0), note: None }, now);
    assert_eq!(e.stats.restarts, 0, "its exit is no death");
    // A run that has had a failure releases its workers only when they are idle: the new
    // worker keeps its place behind the units it runs, for the retries still to come.
    assert!(shutdowns(&e.take_actions()).is_empty());
    let mut pending: Vec<_> = sent;
    let mut done = 0;
    while let Some((id, first, end, tag)) = pending.pop() {
        let items = end - first;
        e.handle(Event::Done { id, tag, items, output: lines(items), rss: None }, now);
        let actions = e.take_actions();
        pending.extend(sends(&actions, &chunks));
        done += 1;
        if !pending.is_empty() || !e.workers[&1].in_flight.is_empty() {
            assert!(shutdowns(&actions).is_empty(), "not while it has units: {actions:?}");
        }
        if let Some(end) = e.take_end() {
            assert!(end.is_ok());
            break;
        }
    }
    assert!(done >= 3, "(0,4), (4,5) and (5,10) all ran");
}

#[test]
fn a_poison_input_stops_the_run_after_everything_before_it() {
    let chunks = Chunks::new(0, 3, 1);
    let cfg = PoolConfig { retries: 0, ..config(1) };
    let mut e = Engine::range(chunks, Format::Lines, cfg, true, t0());
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    // Input 0 is fine, input 1 kills its worker (retries 0: given up at once).
    e.handle(Event::Done { id: 0, tag: sent[0].3, items: 1, output: lines(1), rss: None }, now);
    e.handle(Event::Exited { id: 0, exit: Exit::Signal(11), note: None }, now);
    assert_eq!(releases(&e.take_actions()), vec![(0, 1, true)]);
    match e.take_end() {
        Some(Err(Stop::Fatal(PoolError::TaskFailed { what, attempts, reason, .. }))) => {
            assert_eq!((what.as_str(), attempts), ("input 1", 1));
            assert!(reason.contains("SIGSEGV"), "{reason}");
        }
        other => panic!("expected the run to stop before input 1: {other:?}"),
    }
}

#[test]
fn under_keep_going_a_poison_input_is_released_as_failed_and_the_run_goes_on() {
    let chunks = Chunks::new(0, 2, 1);
    let cfg = PoolConfig { retries: 0, keep_going: true, ..config(1) };
    let mut e = Engine::range(chunks, Format::Lines, cfg, true, t0());
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    let failed = ChunkFailed { chunk: sent[0].3, item: Some(0), reason: "boom".into() };
    e.handle(Event::Failed { id: 0, failed }, now);
    e.handle(Event::Done { id: 0, tag: sent[1].3, items: 1, output: lines(1), rss: None }, now);
    assert_eq!(releases(&e.take_actions()), vec![(0, 1, false), (1, 2, true)]);
    assert!(matches!(e.take_end(), Some(Ok(()))));
    assert_eq!(e.stats.failed_count, 1);
    assert_eq!(e.stats.failed_items[0].what, "input 0");
}

#[test]
fn a_unit_overrunning_the_timeout_ends_its_worker_and_the_deadline_follows_the_pipeline() {
    let (chunks, limit) = (Chunks::new(0, 100, 10), ms(1000));
    let cfg = PoolConfig { task_timeout: Some(limit), ..config(1) };
    let mut e = Engine::range(chunks, Format::Lines, cfg, true, t0());
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(e.next_timer(), Some(now + limit));
    // The first unit answers at 900 ms: the second starts running then.
    let later = now + ms(900);
    e.handle(Event::Done { id: 0, tag: sent[0].3, items: 10, output: lines(10), rss: None }, later);
    e.take_actions();
    assert_eq!(e.next_timer(), Some(later + limit));
    e.handle(Event::Tick, now + limit);
    assert_eq!(e.take_actions(), vec![], "not due yet: the deadline moved");
    e.handle(Event::Tick, later + limit);
    assert_eq!(e.take_actions(), vec![Action::Terminate { id: 0 }]);
    e.handle(Event::Exited { id: 0, exit: Exit::Signal(15), note: None }, later + limit);
    let logs: Vec<String> = e
        .take_actions()
        .into_iter()
        .filter_map(|a| if let Action::Log(l) = a { Some(l.outcome) } else { None })
        .collect();
    assert!(logs.iter().any(|l| l.contains("timed out: inputs 10..20")), "{logs:?}");
    assert_eq!(e.stats.timeouts, 1);
}

#[test]
fn workers_that_never_start_end_the_run_after_five_tries_naming_the_refusal() {
    let (mut e, _) = range(100, 10, 1);
    let mut now = t0();
    e.handle(Event::ConnectionRefused("wrong token from pid 7".into()), now);
    for attempt in 0..5 {
        let actions = e.take_actions();
        let id = actions
            .iter()
            .find_map(|a| if let Action::Spawn { id } = a { Some(*id) } else { None })
            .unwrap_or_else(|| panic!("attempt {attempt} spawns"));
        e.handle(Event::Exited { id, exit: Exit::Code(2), note: None }, now);
        if let Some(at) = e.next_timer() {
            now = at;
            e.handle(Event::Tick, now);
        }
    }
    match e.take_end() {
        Some(Err(Stop::Fatal(PoolError::WorkersWontStart { attempts: 5, last }))) => {
            assert!(last.contains("wrong token"), "{last}");
        }
        other => panic!("expected the run to give up: {other:?}"),
    }
}

#[test]
fn once_every_unit_is_out_range_workers_are_told_to_finish_behind_their_units() {
    let (mut e, chunks) = range(40, 10, 2);
    let now = t0();
    let actions = bring_up(&mut e, now);
    let sent = sends(&actions, &chunks);
    assert_eq!(sent.len(), 4, "every chunk is out: two in each pipeline");
    // Both are told at once: each answers its two units first, then exits, with no round
    // trip between its last answer and its exit.
    assert_eq!(shutdowns(&actions), vec![0, 1], "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Spawn { id } if *id > 1)), "none new");
    for &(id, first, end, tag) in sent.iter().filter(|s| s.0 == 0) {
        let items = end - first;
        e.handle(Event::Done { id, tag, items, output: lines(items), rss: None }, now);
    }
    assert!(shutdowns(&e.take_actions()).is_empty(), "told once");
    e.handle(Event::Exited { id: 0, exit: Exit::Code(0), note: None }, now);
    assert_eq!((e.stats.recycled, e.stats.restarts), (0, 0), "its exit is neither");
    // Worker 1 dies with both its units: a replacement runs them, and the run completes.
    e.handle(Event::Exited { id: 1, exit: Exit::Signal(9), note: None }, now);
    assert_eq!(e.stats.restarts, 1);
    e.handle(Event::Tick, now);
    let actions = bring_up(&mut e, now);
    let sent = sends(&actions, &chunks);
    assert_eq!(
        sent.iter().map(|s| (s.0, s.1, s.2)).collect::<Vec<_>>(),
        [(2, 20, 30), (2, 30, 40)]
    );
    assert!(shutdowns(&actions).is_empty(), "after a death, only when idle");
    for (id, first, end, tag) in sent {
        e.handle(
            Event::Done { id, tag, items: end - first, output: lines(end - first), rss: None },
            now,
        );
    }
    let actions = e.take_actions();
    assert_eq!(releases(&actions).last(), Some(&(30, 40, true)));
    assert!(matches!(e.take_end(), Some(Ok(()))), "complete");
}

/// Two workers, batches of one item, two items sent: one to each. Returns the sends.
fn two_workers_one_item_each(now: Instant) -> (Engine, Vec<(u64, u64, u64, u64)>) {
    let one = Batching { max_items: 1, max_bytes: 1 << 20, target: None, window_bytes: None };
    let mut e = items(2, one);
    bring_up(&mut e, now);
    e.handle(Event::Items(vec![item(3), item(3)]), now);
    let sent = sends(&e.take_actions(), &Chunks::new(0, 0, 1));
    (e, sent)
}

#[test]
fn an_items_run_shuts_idle_workers_down_only_once_its_source_has_ended() {
    let now = t0();
    let (mut e, sent) = two_workers_one_item_each(now);
    assert_eq!(sent.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(), [(0, 0), (1, 1)]);
    e.handle(
        Event::Done { id: 0, tag: sent[0].3, items: 1, output: records(&[b"r"]), rss: None },
        now,
    );
    assert_eq!(shutdowns(&e.take_actions()), Vec::<u64>::new(), "more items may come");
    e.handle(Event::SourceEnded, now);
    assert_eq!(
        shutdowns(&e.take_actions()),
        vec![0],
        "none will: the idle one goes, the busy one stays"
    );
    e.handle(
        Event::Done { id: 1, tag: sent[1].3, items: 1, output: records(&[b"s"]), rss: None },
        now,
    );
    assert!(matches!(e.take_end(), Some(Ok(()))));
}

#[test]
fn a_worker_shut_down_early_that_says_broken_on_its_way_out_does_not_cut_the_run_short() {
    // `map --exec`: a command that prints a line once its input is closed breaks the contract
    // at the end, as it always did; being released before the others finish must not stop the
    // run then, losing the lines still running elsewhere. It is noted, as at the end, and its
    // exit (with the broken-contract status) is no death.
    let now = t0();
    let (mut e, sent) = two_workers_one_item_each(now);
    e.handle(Event::SourceEnded, now);
    e.handle(
        Event::Done { id: 0, tag: sent[0].3, items: 1, output: records(&[b"r"]), rss: None },
        now,
    );
    let actions = e.take_actions();
    assert!(actions.contains(&Action::Shutdown { id: 0 }), "released: {actions:?}");
    e.handle(Event::Broken { id: 0, reason: "printed 1 line(s)".into() }, now);
    e.handle(Event::Exited { id: 0, exit: Exit::Code(5), note: Some("broken".into()) }, now);
    assert!(!e.is_finished(), "worker 1 is still running item 1");
    assert_eq!((e.stats.restarts, e.stats.recycled), (0, 0));
    e.handle(
        Event::Done { id: 1, tag: sent[1].3, items: 1, output: records(&[b"s"]), rss: None },
        now,
    );
    assert_eq!(releases(&e.take_actions()), [(1, 2, true)], "item 1's result is kept");
    assert!(matches!(e.take_end(), Some(Ok(()))));
    assert_eq!(e.stats.broken.as_deref(), Some("printed 1 line(s)"), "and the contract noted");
}

#[test]
fn a_recycled_worker_is_replaced_at_once_and_its_exit_is_no_restart() {
    let chunks = Chunks::new(0, 30, 10);
    let cfg = PoolConfig { max_tasks_per_worker: Some(1), ..config(1) };
    let mut e = Engine::range(chunks, Format::Lines, cfg, true, t0());
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(sent.len(), 1, "a worker with a quota of one gets one unit");
    e.handle(Event::Done { id: 0, tag: sent[0].3, items: 10, output: lines(10), rss: None }, now);
    let actions = e.take_actions();
    assert!(actions.contains(&Action::Shutdown { id: 0 }));
    assert!(actions.contains(&Action::Spawn { id: 1 }));
    e.handle(Event::Exited { id: 0, exit: Exit::Code(0), note: None }, now);
    assert_eq!((e.stats.recycled, e.stats.restarts), (1, 0));
    assert_eq!(e.next_timer(), None, "no respawn: the replacement already started");
}

#[test]
fn a_worker_at_its_quota_retires_after_a_caught_failure_too() {
    // One unit per worker, and the first unit's item panics (caught): the worker has answered
    // its quota, so it is replaced, and the cut-out item and the rest still run. It used to be
    // kept, given nothing, never replaced: the run hung.
    let chunks = Chunks::new(0, 3, 1);
    let cfg =
        PoolConfig { max_tasks_per_worker: Some(1), keep_going: true, retries: 0, ..config(1) };
    let mut e = Engine::range(chunks, Format::Lines, cfg, true, t0());
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(sent.len(), 1);
    let failed = ChunkFailed { chunk: sent[0].3, item: Some(0), reason: "boom".into() };
    e.handle(Event::Failed { id: 0, failed }, now);
    let actions = e.take_actions();
    assert!(actions.contains(&Action::Shutdown { id: 0 }), "{actions:?}");
    assert!(actions.contains(&Action::Spawn { id: 1 }), "{actions:?}");
    e.handle(Event::Exited { id: 0, exit: Exit::Code(0), note: None }, now);
    e.handle(Event::Spawned { id: 1, pid: 1001 }, now);
    e.handle(Event::Ready { id: 1 }, now);
    // Each further worker answers its one unit and is replaced, until the run ends.
    let mut next = 1;
    let mut sent = sends(&e.take_actions(), &chunks);
    while e.take_end().is_none() {
        assert_eq!(sent.len(), 1, "worker {next} gets one unit");
        let (id, first, end, tag) = sent[0];
        let items = end - first;
        e.handle(Event::Done { id, tag, items, output: lines(items), rss: None }, now);
        e.handle(Event::Exited { id, exit: Exit::Code(0), note: None }, now);
        next += 1;
        assert!(next < 10, "the run does not end");
        sent = sends(&bring_up(&mut e, now), &chunks);
    }
    assert_eq!(e.stats.failed_count, 1);
}

#[test]
fn a_first_interrupt_drains_the_units_in_flight_a_second_stops_at_once() {
    let (mut e, chunks) = range(1000, 10, 1);
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    e.handle(Event::Interrupt(crate::signal::SIGINT), now);
    e.handle(Event::Done { id: 0, tag: sent[0].3, items: 10, output: lines(10), rss: None }, now);
    assert!(sends(&e.take_actions(), &chunks).is_empty(), "nothing new goes out");
    assert!(e.take_end().is_none(), "one unit is still in flight");
    assert_eq!(e.next_timer(), Some(now + INTERRUPT_GRACE));
    e.handle(Event::Done { id: 0, tag: sent[1].3, items: 10, output: lines(10), rss: None }, now);
    assert!(matches!(e.take_end(), Some(Err(Stop::Interrupted(_)))));
    let (mut e, _) = range(1000, 10, 1);
    bring_up(&mut e, now);
    e.handle(Event::Interrupt(crate::signal::SIGINT), now);
    e.handle(Event::Interrupt(crate::signal::SIGTERM), now);
    assert!(matches!(e.take_end(), Some(Err(Stop::Interrupted(i))) if i.name == "SIGTERM"));
}

fn items(workers: usize, batching: Batching) -> Engine {
    Engine::items(batching, config(workers), true, t0())
}

fn item(n: usize) -> Item {
    Item::from(Bytes::from(vec![b'x'; n]))
}

fn records(results: &[&[u8]]) -> Bytes {
    let mut payload = Vec::new();
    for r in results {
        push_record(&mut payload, r);
    }
    Bytes::from(payload)
}

const BATCH: Batching =
    Batching { max_items: 3, max_bytes: 100, window_bytes: Some(1000), target: None };

#[test]
fn items_are_batched_by_count_and_by_bytes_and_a_large_one_goes_alone() {
    let mut e = items(1, BATCH);
    let now = t0();
    let sizes = [10, 10, 10, 10, 60, 60, 500, 1];
    assert!(e.wants_items());
    e.handle(Event::Items(sizes.iter().map(|&n| item(n)).collect()), now);
    let chunks = Chunks::new(0, 0, 1);
    let mut sent = sends(&bring_up(&mut e, now), &chunks);
    let mut all = sent.clone();
    // Answer each unit as it comes: every item in its own record.
    while let Some((id, first, end, tag)) = sent.pop() {
        let out: Vec<&[u8]> = (first..end).map(|_| &b"r"[..]).collect();
        e.handle(
            Event::Done { id, tag, items: end - first, output: records(&out), rss: None },
            now,
        );
        let next = sends(&e.take_actions(), &chunks);
        all.extend(next.iter().copied());
        sent.extend(next);
    }
    let units: Vec<(u64, u64)> = all.iter().map(|s| (s.1, s.2)).collect();
    // Three of 10 (count), then 10 + 60 (bytes), 60 alone, 500 alone, then 1.
    assert_eq!(units, vec![(0, 3), (3, 5), (5, 6), (6, 7), (7, 8)]);
}

#[test]
fn an_idle_worker_gets_what_has_arrived_without_waiting_for_a_full_batch() {
    let mut e = items(1, BATCH);
    let now = t0();
    bring_up(&mut e, now);
    e.handle(Event::Items(vec![item(1)]), now);
    let chunks = Chunks::new(0, 0, 1);
    let sent = sends(&e.take_actions(), &chunks);
    assert_eq!(sent.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), vec![(0, 1)]);
}

#[test]
fn items_are_pulled_only_within_the_window() {
    let mut e = items(1, BATCH);
    let now = t0();
    bring_up(&mut e, now);
    // One worker × (2 + 1) batches × 3 items = 9 items.
    for _ in 0..9 {
        assert!(e.wants_items());
        e.handle(Event::Items(vec![item(1)]), now);
    }
    assert!(!e.wants_items(), "the window is full");
    e.handle(Event::Consumed(1), now);
    assert!(e.wants_items(), "the consumer took one");
    let mut e = items(1, Batching { window_bytes: Some(100), ..BATCH });
    e.handle(Event::Items(vec![item(150)]), now);
    assert!(!e.wants_items(), "the bytes window is full");
}

#[test]
fn an_empty_result_is_a_result_and_an_items_run_ends_with_its_source() {
    let mut e = items(1, BATCH);
    let now = t0();
    bring_up(&mut e, now);
    e.handle(Event::Items(vec![item(3)]), now);
    e.handle(Event::SourceEnded, now);
    let chunks = Chunks::new(0, 0, 1);
    let (id, _, _, tag) = sends(&e.take_actions(), &chunks)[0];
    e.handle(Event::Done { id, tag, items: 1, output: records(&[b""]), rss: None }, now);
    let released = e.take_actions();
    assert_eq!(releases(&released), vec![(0, 1, true)]);
    assert!(
        matches!(&released[..], [.., Action::Release(r)] if r.outcome == Outcome::Done(records(&[b""])))
    );
    assert!(matches!(e.take_end(), Some(Ok(()))));
    let mut e = items(2, BATCH);
    e.handle(Event::SourceEnded, now);
    assert!(matches!(e.take_end(), Some(Ok(()))), "no items at all: done at once");
}

#[test]
fn records_that_do_not_match_the_batch_end_the_worker() {
    let mut e = items(1, BATCH);
    let now = t0();
    e.handle(Event::Items(vec![item(3), item(3)]), now);
    let chunks = Chunks::new(0, 0, 1);
    let (id, _, _, tag) = sends(&bring_up(&mut e, now), &chunks)[0];
    e.handle(Event::Done { id, tag, items: 2, output: records(&[b"one only"]), rss: None }, now);
    assert_eq!(e.take_actions(), vec![Action::Kill { id }]);
}

#[test]
fn a_poison_item_in_a_batch_is_cornered_and_named_by_index() {
    let cfg = PoolConfig { retries: 1, keep_going: true, ..config(1) };
    let mut e = Engine::items(BATCH, cfg, false, t0());
    let now = t0();
    e.handle(Event::Items(vec![item(1), item(1), item(1)]), now);
    e.handle(Event::SourceEnded, now);
    let chunks = Chunks::new(0, 0, 1);
    let mut deaths = 0;
    let mut pending = sends(&bring_up(&mut e, now), &chunks);
    let mut released = Vec::new();
    // Item 1 kills every worker that runs it; the others are fine.
    while let Some((id, first, end, tag)) = pending.first().copied() {
        pending.remove(0);
        if (first..end).contains(&1) {
            deaths += 1;
            e.handle(Event::Exited { id, exit: Exit::Signal(11), note: None }, now);
            pending.clear();
            e.handle(Event::Tick, now + ms(1000));
            let actions = bring_up(&mut e, now + ms(1000));
            released.extend(releases(&actions));
            pending.extend(sends(&actions, &chunks));
        } else {
            let out: Vec<&[u8]> = (first..end).map(|_| &b"ok"[..]).collect();
            e.handle(
                Event::Done { id, tag, items: end - first, output: records(&out), rss: None },
                now,
            );
            let actions = e.take_actions();
            released.extend(releases(&actions));
            pending.extend(sends(&actions, &chunks));
        }
    }
    released.sort();
    assert_eq!(released, vec![(0, 1, true), (1, 2, false), (2, 3, true)]);
    assert_eq!(e.stats.failed_items[0].what, "item 1");
    // Twice whole (retries 1), halved to [0,1) [1,3), [1,3) halved, then item 1 twice.
    assert_eq!(deaths, 5);
    assert!(matches!(e.take_end(), Some(Ok(()))));
}

#[test]
fn a_unit_running_far_longer_than_its_siblings_is_reported_once_never_killed() {
    let (mut e, chunks) = range(1000, 10, 1);
    let now = t0();
    let mut sent = sends(&bring_up(&mut e, now), &chunks);
    // Three units of 10 ms each make the median.
    let mut t = now;
    for _ in 0..3 {
        let (id, first, end, tag) = sent.remove(0);
        t += ms(10);
        e.handle(
            Event::Done { id, tag, items: end - first, output: lines(end - first), rss: None },
            t,
        );
        e.handle(Event::Consumed(end), t);
        sent.extend(sends(&e.take_actions(), &chunks));
    }
    // 10 ms × 10 is below the 2 s floor: the report comes at 2 s.
    assert_eq!(e.next_timer(), Some(t + STALL_FLOOR));
    e.handle(Event::Tick, t + ms(1999));
    assert!(e.take_actions().is_empty());
    e.handle(Event::Tick, t + STALL_FLOOR);
    match &e.take_actions()[..] {
        [Action::Stalled(s)] => {
            assert_eq!((s.pid, s.what.as_str(), s.median), (1000, "inputs 30..40", ms(10)));
        }
        other => panic!("expected one stall report, got {other:?}"),
    }
    e.handle(Event::Tick, t + STALL_FLOOR * 3);
    assert!(e.take_actions().is_empty(), "reported once, and never killed");
    // With a task timeout there is no report: the timeout decides.
    let chunks = Chunks::new(0, 1000, 10);
    let cfg = PoolConfig { task_timeout: Some(Duration::from_secs(60)), ..config(1) };
    let mut e = Engine::range(chunks, Format::Lines, cfg, true, now);
    let mut sent = sends(&bring_up(&mut e, now), &chunks);
    for _ in 0..3 {
        let (id, first, end, tag) = sent.remove(0);
        e.handle(
            Event::Done { id, tag, items: end - first, output: lines(end - first), rss: None },
            now,
        );
        sent.extend(sends(&e.take_actions(), &chunks));
    }
    e.handle(Event::Tick, now + Duration::from_secs(30));
    assert!(e.take_actions().is_empty());
}

#[test]
fn progress_within_a_batch_moves_its_deadline_so_the_timeout_is_per_item() {
    let limit = ms(1000);
    let cfg = PoolConfig { task_timeout: Some(limit), ..config(1) };
    let mut e = Engine::items(BATCH, cfg, true, t0());
    let now = t0();
    e.handle(Event::Items(vec![item(1), item(1), item(1)]), now);
    let chunks = Chunks::new(0, 0, 1);
    let (id, _, _, tag) = sends(&bring_up(&mut e, now), &chunks)[0];
    assert_eq!(e.next_timer(), Some(now + limit));
    // Two items of 800 ms each: without progress the batch would be killed at 1 s.
    e.handle(Event::Progress { id, tag }, now + ms(800));
    e.handle(Event::Progress { id, tag }, now + ms(1600));
    e.handle(Event::Tick, now + ms(2000));
    assert!(e.take_actions().is_empty(), "each item had less than the limit");
    assert_eq!(e.next_timer(), Some(now + ms(1600) + limit));
    e.handle(Event::Progress { id, tag: tag + 99 }, now + ms(2500));
    e.handle(Event::Tick, now + ms(2600));
    assert_eq!(
        e.take_actions(),
        vec![Action::Terminate { id }],
        "another unit's progress counts not"
    );
}

#[test]
fn a_worker_over_its_memory_limit_finishes_its_pipeline_then_is_replaced() {
    let chunks = Chunks::new(0, 100, 10);
    let cfg = PoolConfig { max_worker_memory: Some(100 << 20), ..config(1) };
    let mut e = Engine::range(chunks, Format::Lines, cfg, true, t0());
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(sent.len(), 2);
    let done = |e: &mut Engine, (id, first, end, tag): (u64, u64, u64, u64), rss| {
        let output = lines(end - first);
        e.handle(Event::Done { id, tag, items: end - first, output, rss: Some(rss) }, now);
        e.take_actions()
    };
    let actions = done(&mut e, sent[0], 50 << 20);
    assert_eq!(sends(&actions, &chunks).len(), 1, "under the limit: work goes on");
    let actions = done(&mut e, sent[1], 200 << 20);
    assert!(sends(&actions, &chunks).is_empty(), "over the limit: nothing more is sent");
    assert!(!actions.contains(&Action::Shutdown { id: 0 }), "one unit is still in its pipeline");
    let third = e.workers[&0].in_flight[0];
    let actions = done(&mut e, (0, third.unit.first, third.unit.end, third.tag), 200 << 20);
    assert!(actions.contains(&Action::Shutdown { id: 0 }));
    assert!(actions.contains(&Action::Spawn { id: 1 }));
    assert_eq!(e.stats.recycled, 1);
}

#[test]
fn batches_start_at_one_item_and_grow_to_the_time_target() {
    let batching =
        Batching { max_items: 1000, max_bytes: 1 << 20, window_bytes: None, target: Some(ms(5)) };
    let mut e = Engine::items(batching, config(1), false, t0());
    let now = t0();
    e.handle(Event::Items((0..2000).map(|_| item(10)).collect()), now);
    let chunks = Chunks::new(0, 0, 1);
    let mut pending = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(pending[0].2 - pending[0].1, 1, "the first batch is one item");
    // Every item costs 50 us: batches settle at 5 ms / 50 us = 100 items.
    let mut t = now;
    let mut sizes = Vec::new();
    for _ in 0..12 {
        let (id, first, end, tag) = pending.remove(0);
        t += Duration::from_micros(50) * (end - first) as u32;
        let out: Vec<&[u8]> = (first..end).map(|_| &b""[..]).collect();
        e.handle(Event::Done { id, tag, items: end - first, output: records(&out), rss: None }, t);
        let more = sends(&e.take_actions(), &chunks);
        sizes.extend(more.iter().map(|s| s.2 - s.1));
        pending.extend(more);
    }
    assert_eq!(sizes.last(), Some(&100), "batches settle at the target: {sizes:?}");
}

#[test]
fn a_broken_contract_stops_the_run_and_one_said_on_the_way_out_is_kept() {
    let mut e = items(1, BATCH);
    let now = t0();
    e.handle(Event::Items(vec![item(3)]), now);
    let chunks = Chunks::new(0, 0, 1);
    let (id, _, _, _) = sends(&bring_up(&mut e, now), &chunks)[0];
    e.handle(Event::Broken { id, reason: "two lines for one".into() }, now);
    let end = e.take_end();
    assert!(
        matches!(&end, Some(Err(Stop::Fatal(PoolError::Broken(why)))) if why == "two lines for one"),
        "{end:?}"
    );
    e.note_broken("first".into());
    e.note_broken("second".into());
    assert_eq!(e.into_stats().broken.as_deref(), Some("first"));
}

#[test]
fn with_a_pipeline_of_one_no_unit_waits_behind_another_on_a_busy_worker() {
    let cfg = PoolConfig { pipeline_depth: 1, ..config(2) };
    let batching = Batching { max_items: 1, ..BATCH };
    let mut e = Engine::items(batching, cfg, false, t0());
    let now = t0();
    let chunks = Chunks::new(0, 0, 1);
    // Only the first worker is up when three items arrive: it gets one, not two.
    let mut spawned = Vec::new();
    for a in e.take_actions() {
        if let Action::Spawn { id } = a {
            spawned.push(id);
        }
    }
    e.handle(Event::Spawned { id: spawned[0], pid: 1 }, now);
    e.handle(Event::Ready { id: spawned[0] }, now);
    e.handle(Event::Items(vec![item(1), item(1), item(1)]), now);
    assert_eq!(sends(&e.take_actions(), &chunks).len(), 1);
    e.handle(Event::Spawned { id: spawned[1], pid: 2 }, now);
    e.handle(Event::Ready { id: spawned[1] }, now);
    let sent = sends(&e.take_actions(), &chunks);
    assert_eq!(sent.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(), vec![(spawned[1], 1)]);
}

#[test]
fn a_released_worker_over_its_memory_limit_is_told_to_finish_once() {
    // Worker 0 passes its limit with a unit still in its pipeline; worker 1 then takes the
    // last chunk, so both are released behind their units. Worker 0's last answer must not
    // tell it again (nor count a recycling at the end of the run).
    let chunks = Chunks::new(0, 50, 10);
    let cfg = PoolConfig { max_worker_memory: Some(100 << 20), ..config(2) };
    let mut e = Engine::range(chunks, Format::Lines, cfg, true, t0());
    let now = t0();
    let sent = sends(&bring_up(&mut e, now), &chunks);
    assert_eq!(sent.len(), 4);
    let done = |e: &mut Engine, id: u64, first: u64, rss: u64| {
        let f = e.workers[&id].in_flight.iter().find(|f| f.unit.first == first).copied();
        let f = f.expect("in flight");
        let items = f.unit.end - f.unit.first;
        let output = lines(items);
        e.handle(Event::Done { id, tag: f.tag, items, output, rss: Some(rss) }, now);
        e.take_actions()
    };
    let firsts = |id: u64| sent.iter().filter(|s| s.0 == id).map(|s| s.1).collect::<Vec<_>>();
    let (w0, w1) = (firsts(0), firsts(1));
    assert_eq!((w0.len(), w1.len()), (2, 2), "{sent:?}");
    let actions = done(&mut e, 0, w0[0], 200 << 20);
    assert!(shutdowns(&actions).is_empty(), "over its limit, one unit still to answer");
    let actions = done(&mut e, 1, w1[0], 1 << 20);
    assert_eq!(sends(&actions, &chunks).len(), 1, "worker 1 takes the last chunk");
    assert_eq!(shutdowns(&actions), vec![0, 1], "every chunk out: both released");
    let actions = done(&mut e, 0, w0[1], 200 << 20);
    assert!(shutdowns(&actions).is_empty(), "told once: {actions:?}");
    assert_eq!(e.stats.recycled, 0);
}
