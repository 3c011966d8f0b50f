//! Behaviour every store must show, written once and run against each engine's tests.

use super::board::BoardTask;
use super::{AlertRuleRecord, Appended, Bounds, Order, Query, Store, WebhookOutcome, WebhookRecord};
use crate::event::NewEvent;
use crate::filter::Filter;

/// An event with `id` and `event_type` and nothing else of note.
pub(crate) fn new_event(id: &str, event_type: &str) -> NewEvent {
    NewEvent {
        id: id.into(),
        event_type: event_type.into(),
        source: "test".into(),
        task_id: None,
        agent_id: None,
        data: "{}".into(),
    }
}

/// On an empty store: seqs are gapless and a repeated id answers its first seq.
pub(crate) async fn first_writes_are_gapless_and_idempotent(store: &dyn Store) {
    let mut w = store.writer().await.unwrap();
    let c = w.append(vec![new_event("a", "x.y"), new_event("b", "x.y"), new_event("a", "x.y")]).await.unwrap();
    let seqs: Vec<_> = c.outcomes.iter().map(|o| (o.seq, o.duplicate)).collect();
    assert_eq!(seqs, vec![(1, false), (2, false), (1, true)]);
    assert_eq!(c.stored.len(), 2);
    assert!(store.writer().await.is_err(), "there is one writer per store handle");
}

/// On the same log reopened after [`first_writes_are_gapless_and_idempotent`]: ids and
/// the head survived.
pub(crate) async fn reopened_log_keeps_ids_and_head(store: &dyn Store) {
    let mut w = store.writer().await.unwrap();
    let c = w.append(vec![new_event("b", "x.y"), new_event("c", "x.y")]).await.unwrap();
    assert_eq!(c.outcomes[0], Appended { id: "b".into(), seq: 2, duplicate: true });
    assert_eq!(c.outcomes[1].seq, 3);
    assert_eq!(store.bounds().await.unwrap(), Bounds { oldest: 1, head: 3 });
}

/// On an empty store: filters, seq windows, order, limits and lookups.
pub(crate) async fn queries_apply_filters_windows_and_order(store: &dyn Store) {
    assert_eq!(store.bounds().await.unwrap(), Bounds { oldest: 1, head: 0 });
    let mut w = store.writer().await.unwrap();
    let types = ["task.created", "bid.submitted", "task.assigned", "tasks.x", "task.created"];
    let events = types.iter().enumerate().map(|(i, t)| new_event(&format!("e{i}"), t)).collect();
    w.append(events).await.unwrap();
    let filter =
        Filter::from_spec(crate::filter::FilterSpec { types: vec!["task.*".into()], ..Default::default() }).unwrap();
    let got = store.query(Query { filter: filter.clone(), limit: 10, ..Query::default() }).await.unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 3, 5]);
    let got = store
        .query(Query { filter, after: Some(1), before: Some(5), order: Order::Desc, limit: 10, ..Query::default() })
        .await
        .unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    let got = store.query(Query { limit: 2, ..Query::default() }).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(store.get_by_id("e3").await.unwrap().unwrap().seq, 4);
    assert!(store.get_by_seq(99).await.unwrap().is_none());
    assert!(store.get_by_seq(u64::MAX).await.unwrap().is_none());
    // One commit, one time: the last event at that time is its highest seq.
    let ts = store.get_by_seq(5).await.unwrap().unwrap().ts_ms;
    assert_eq!(store.get_by_seq(1).await.unwrap().unwrap().ts_ms, ts);
    assert_eq!(store.last_seq_at_or_before(ts).await.unwrap(), Some(5));
    assert_eq!(store.last_seq_at_or_before(i64::MAX).await.unwrap(), Some(5));
    assert_eq!(store.last_seq_at_or_before(ts - 1).await.unwrap(), None);
    let counts = store.bucket_counts(0, 60_000).await.unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 5);
}

/// On an empty store: an event retention pruned still answers a re-send of its id with
/// its original seq, stores nothing new, and is forgotten only when its window ends.
pub(crate) async fn pruned_ids_answer_their_original_seq(store: &dyn Store) {
    use crate::hub::Hub;
    use crate::retention::{RetentionSettings, prune};
    let hub = Hub::new(Bounds { oldest: 1, head: 0 }, 4);
    let mut w = store.writer().await.unwrap();
    let first = w.append((0..10).map(|i| new_event(&format!("p{i}"), "a.b")).collect()).await.unwrap();
    hub.publish(&first.stored);
    let settings = RetentionSettings { events: Some(5), ..RetentionSettings::default() };
    assert_eq!(prune(&settings, &hub, store).await.unwrap(), 5);
    assert!(store.get_by_id("p0").await.unwrap().is_none(), "the event itself is gone");

    let again = w.append(vec![new_event("p1", "a.b"), new_event("p7", "a.b"), new_event("new", "a.b")]).await.unwrap();
    let outcomes: Vec<_> = again.outcomes.iter().map(|o| (o.seq, o.duplicate)).collect();
    assert_eq!(outcomes, vec![(2, true), (8, true), (11, false)], "pruned and kept ids answer their seq");
    assert_eq!(again.stored.len(), 1);
    assert_eq!(store.bounds().await.unwrap(), Bounds { oldest: 6, head: 11 });

    // A window of 0 days forgets every pruned id on the next round.
    let forget = RetentionSettings { idempotency_days: 0, ..settings };
    prune(&forget, &hub, store).await.unwrap();
    let later = w.append(vec![new_event("p1", "a.b")]).await.unwrap();
    assert_eq!((later.outcomes[0].seq, later.outcomes[0].duplicate), (12, false), "forgotten: stored anew");
}

/// On an empty store: alert rules are stored whole, listed oldest first, refused
/// beyond the cap, and deleted once.
pub(crate) async fn alert_rules_are_kept_listed_capped_and_deleted(store: &dyn Store) {
    let rule = |id: &str, created_ms: i64| AlertRuleRecord {
        id: id.into(),
        name: format!("rule {id}"),
        filter: r#"{"types":["task.failed"]}"#.into(),
        threshold: Some(3),
        window_secs: Some(60),
        absent_secs: None,
        created_ms,
    };
    let silent = AlertRuleRecord { threshold: None, window_secs: None, absent_secs: Some(600), ..rule("b", 2) };
    assert!(store.insert_alert_rule(silent.clone(), 2).await.unwrap());
    assert!(store.insert_alert_rule(rule("a", 1), 2).await.unwrap());
    assert!(!store.insert_alert_rule(rule("c", 3), 2).await.unwrap(), "the third of at most two is refused");
    assert_eq!(store.list_alert_rules().await.unwrap(), vec![rule("a", 1), silent]);
    assert!(store.delete_alert_rule("a").await.unwrap());
    assert!(!store.delete_alert_rule("a").await.unwrap(), "deleted once");
    assert!(store.insert_alert_rule(rule("c", 3), 2).await.unwrap(), "a deleted rule frees its place");
    assert_eq!(store.list_alert_rules().await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
}

/// On an empty store: a webhook is stored and listed with its secret; its seq only
/// moves forward; a failure run keeps its start until a delivery ends it; deleting it
/// stops anything more being recorded.
pub(crate) async fn webhooks_keep_their_progress_and_failures(store: &dyn Store) {
    let record = |id: &str, created_ms| WebhookRecord {
        id: id.into(),
        url: "http://example.com/hook".into(),
        filter: r#"{"types":["task.*"]}"#.into(),
        format: "standard".into(),
        secret: "whsec_c2VjcmV0".into(),
        delivered_seq: 7,
        created_ms,
        last_status: None,
        last_error: None,
        failing_since_ms: None,
        last_attempt_ms: None,
    };
    store.insert_webhook(record("wh_b", 20)).await.unwrap();
    store.insert_webhook(record("wh_a", 10)).await.unwrap();
    let listed = store.list_webhooks().await.unwrap();
    assert_eq!(listed, vec![record("wh_a", 10), record("wh_b", 20)], "oldest first, as stored");

    let failed = |status, error: &str| WebhookOutcome::Failed { status, error: error.into() };
    assert!(store.record_webhook("wh_a", &failed(Some(503), "HTTP 503"), 100).await.unwrap());
    assert!(store.record_webhook("wh_a", &failed(None, "timed out"), 200).await.unwrap());
    let a = store.list_webhooks().await.unwrap().remove(0);
    assert_eq!((a.last_status, a.last_error.as_deref()), (None, Some("timed out")));
    assert_eq!((a.failing_since_ms, a.last_attempt_ms), (Some(100), Some(200)), "the run began at the first");

    store.record_webhook("wh_a", &WebhookOutcome::Delivered { upto: 12, status: 204 }, 300).await.unwrap();
    store.record_webhook("wh_a", &WebhookOutcome::Passed { upto: 9 }, 400).await.unwrap();
    let a = store.list_webhooks().await.unwrap().remove(0);
    assert_eq!(a.delivered_seq, 12, "never moves back");
    assert_eq!((a.last_status, a.last_error, a.failing_since_ms), (Some(204), None, None));
    store.record_webhook("wh_a", &WebhookOutcome::Passed { upto: 15 }, 500).await.unwrap();
    assert_eq!(store.list_webhooks().await.unwrap()[0].delivered_seq, 15);

    assert!(store.delete_webhook("wh_a").await.unwrap());
    assert!(!store.delete_webhook("wh_a").await.unwrap(), "already gone");
    assert!(!store.record_webhook("wh_a", &WebhookOutcome::Passed { upto: 20 }, 600).await.unwrap());
    assert_eq!(store.list_webhooks().await.unwrap().len(), 1);
}

/// A task row as the boards' fold would save it.
fn board_task(id: &str, seq: u64, status: crate::store::board::BoardStatus) -> crate::store::board::BoardTask {
    crate::store::board::BoardTask {
        task_id: id.into(),
        description: format!("Sort the {id} logs"),
        status,
        created_seq: seq,
        created_ms: 1_000 * seq as i64,
        updated_ms: 1_000 * seq as i64 + 5,
        agent_id: (seq % 2 == 0).then(|| "echo".to_owned()),
        bid_sats: (seq % 2 == 0).then_some(u64::MAX),
        bids: 2,
        retry_of: None,
        reason: None,
        auction_closed: false,
    }
}

/// On an empty store: the boards' rows save with their seq only from the seq they were
/// folded from, read back as saved, filter, count and page newest first, and finished
/// tasks go with retention while open ones stay.
pub(crate) async fn board_rows_save_filter_page_and_prune(store: &dyn Store) {
    use crate::store::board::{
        AgentQuery, BoardAgent, BoardAgentStatus, BoardChanges, BoardStatus, Recent, TaskQuery, Within, to_sql_int,
    };
    assert_eq!(store.board_seq().await.unwrap(), 0);
    let statuses = [BoardStatus::Failed, BoardStatus::Completed, BoardStatus::Bidding, BoardStatus::Failed];
    let mut tasks: Vec<_> = (1..=8).map(|i| board_task(&format!("t{i}"), i, statuses[i as usize % 4])).collect();
    tasks[4].retry_of = Some("t3".into());
    tasks[6].retry_of = Some("t3".into());
    let echo = BoardAgent {
        agent_id: "echo".into(),
        name: "Echo".into(),
        status: BoardAgentStatus::Busy,
        capabilities: vec!["code".into(), "ü".into()],
        tasks_done: 3,
        tasks_failed: 1,
        sats_earned: 90,
        last_seen_ms: 8_000,
        open_tasks: 1,
        reported: Some(BoardAgentStatus::Idle),
    };
    let forge =
        BoardAgent { agent_id: "forge".into(), status: BoardAgentStatus::Offline, reported: None, ..echo.clone() };
    let changes = BoardChanges { from_seq: 0, to_seq: 8, tasks: tasks.clone(), agents: vec![echo.clone(), forge] };
    assert!(store.save_board(changes.clone()).await.unwrap());
    assert!(!store.save_board(changes).await.unwrap(), "a save from a seq that moved on is refused");
    assert_eq!(store.board_seq().await.unwrap(), 8);

    let (read, agents) = store.board_rows(vec!["t2".into(), "nope".into()], vec!["echo".into()]).await.unwrap();
    assert_eq!(read, vec![BoardTask { bid_sats: Some(to_sql_int(u64::MAX) as u64), ..tasks[1].clone() }]);
    assert_eq!(agents, vec![echo.clone()]);

    let all = store.list_tasks(TaskQuery { limit: 3, ..TaskQuery::default() }).await.unwrap();
    assert_eq!(all.iter().map(|t| t.created_seq).collect::<Vec<_>>(), [8, 7, 6], "newest first");
    let page = store.list_tasks(TaskQuery { limit: 3, before_seq: Some(6), ..TaskQuery::default() }).await.unwrap();
    assert_eq!(page.iter().map(|t| t.created_seq).collect::<Vec<_>>(), [5, 4, 3]);
    let failed_query = TaskQuery { status: Some(BoardStatus::Failed), limit: 10, ..TaskQuery::default() };
    let failed = store.list_tasks(failed_query.clone()).await.unwrap();
    assert_eq!(failed.iter().map(|t| t.created_seq).collect::<Vec<_>>(), [8, 7, 4, 3]);
    let found = store.list_tasks(TaskQuery { q: Some("T7 LOGS".into()), limit: 10, ..TaskQuery::default() }).await;
    assert_eq!(found.unwrap().iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), ["t7"], "any case");
    let literal = store.list_tasks(TaskQuery { q: Some("t_".into()), limit: 10, ..TaskQuery::default() }).await;
    assert!(literal.unwrap().is_empty(), "_ is no wildcard");
    let by_id = store.list_tasks(TaskQuery { q: Some("t1".into()), limit: 10, ..TaskQuery::default() }).await;
    assert_eq!(by_id.unwrap().len(), 1);
    let echo_tasks = TaskQuery { agent_id: Some("echo".into()), limit: 10, ..TaskQuery::default() };
    assert_eq!(store.list_tasks(echo_tasks.clone()).await.unwrap().len(), 4);
    let mut counts = store.count_tasks(echo_tasks).await.unwrap();
    counts.sort();
    assert_eq!(counts, [(BoardStatus::Bidding, 2), (BoardStatus::Failed, 2)]);

    // Changed at or after 6 000 ms (t6 at 6 005 on), with the other filters and paging;
    // the counts by status are the window's.
    let recent = Recent { within: Within::Day, since_ms: 6_000 };
    let recent_failed = TaskQuery { recent: Some(recent), limit: 10, ..failed_query.clone() };
    let found = store.list_tasks(recent_failed.clone()).await.unwrap();
    assert_eq!(found.iter().map(|t| t.created_seq).collect::<Vec<_>>(), [8, 7]);
    let paged = store.list_tasks(TaskQuery { limit: 1, before_seq: Some(8), ..recent_failed }).await.unwrap();
    assert_eq!(paged.iter().map(|t| t.created_seq).collect::<Vec<_>>(), [7]);
    let mut counts = store.count_tasks(TaskQuery { recent: Some(recent), ..TaskQuery::default() }).await.unwrap();
    counts.sort();
    assert_eq!(counts, [(BoardStatus::Bidding, 1), (BoardStatus::Failed, 2)], "t6, t7 and t8 changed since");
    let later = TaskQuery { recent: Some(Recent { since_ms: 8_006, ..recent }), limit: 10, ..TaskQuery::default() };
    assert!(store.list_tasks(later).await.unwrap().is_empty(), "none changed after 8 005 ms");
    // The retries of t3, newest first.
    let retries = store.list_tasks(TaskQuery { retry_of: Some("t3".into()), limit: 10, ..TaskQuery::default() });
    assert_eq!(retries.await.unwrap().iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), ["t7", "t5"]);

    let offline = AgentQuery { status: Some(BoardAgentStatus::Offline), limit: 10, ..AgentQuery::default() };
    let offline = store.list_agents(offline).await.unwrap();
    assert_eq!(offline.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(), ["forge"]);
    let after = AgentQuery { after: Some("echo".into()), limit: 10, ..AgentQuery::default() };
    assert_eq!(store.list_agents(after).await.unwrap().len(), 1);

    // An update of a row replaces it.
    let mut t2 = tasks[1].clone();
    t2.status = BoardStatus::Cancelled;
    t2.reason = Some("wrong repo".into());
    let update = BoardChanges { from_seq: 8, to_seq: 9, tasks: vec![t2.clone()], agents: vec![] };
    assert!(store.save_board(update).await.unwrap());
    let (read, _) = store.board_rows(vec!["t2".into()], vec![]).await.unwrap();
    assert_eq!(read[0].reason.as_deref(), Some("wrong repo"));

    // Tasks 1 to 6 were created before seq 7: the finished ones go, t6 (bidding) stays.
    assert_eq!(store.prune_board(7).await.unwrap(), 5);
    let left = store.list_tasks(TaskQuery { limit: 10, ..TaskQuery::default() }).await.unwrap();
    assert_eq!(left.iter().map(|t| t.created_seq).collect::<Vec<_>>(), [8, 7, 6]);
}

/// On an empty store: a swarm snapshot saves once per seq and limits, the newest
/// `keep` of one set of limits stay (another set's are not counted against it), a
/// read finds the newest at or before a seq, and retention takes those no fold can
/// start from any more.
pub(crate) async fn swarm_snapshots_keep_the_newest_and_go_with_retention(store: &dyn Store) {
    for seq in [10, 20, 30, 40, 50] {
        store.save_swarm_snapshot("a", seq, format!("a{seq}").into_bytes(), 3).await.unwrap();
    }
    store.save_swarm_snapshot("b", 10, b"b10".to_vec(), 3).await.unwrap();
    store.save_swarm_snapshot("a", 50, b"other".to_vec(), 3).await.unwrap();
    let at = |limits: &'static str, seq: u64| store.swarm_snapshot_at_or_before(limits, seq);
    assert_eq!(at("a", 45).await.unwrap(), Some((40, b"a40".to_vec())));
    assert_eq!(at("a", u64::MAX).await.unwrap(), Some((50, b"a50".to_vec())), "a seq saved once keeps its first");
    assert_eq!(at("a", 29).await.unwrap(), None, "the newest 3 (30, 40, 50) are kept, 10 and 20 went");
    assert_eq!(at("a", 30).await.unwrap().map(|s| s.0), Some(30));
    assert_eq!(at("b", 10).await.unwrap().map(|s| s.0), Some(10), "another set of limits keeps its own");
    // Retention kept events from 41 on: the snapshot at 40 still folds on from 41.
    assert_eq!(store.prune_swarm_snapshots(41).await.unwrap(), 2);
    assert_eq!(at("a", 45).await.unwrap().map(|s| s.0), Some(40));
    assert_eq!(at("b", 45).await.unwrap(), None);
}

/// An event of `event_type` with `data`, from `source`, for `agent`.
fn event_with(id: &str, event_type: &str, source: &str, agent: Option<&str>, data: serde_json::Value) -> NewEvent {
    NewEvent {
        id: id.into(),
        event_type: event_type.into(),
        source: source.into(),
        task_id: agent.map(|a| format!("task-of-{a}")),
        agent_id: agent.map(Into::into),
        data: data.to_string(),
    }
}

/// The seqs a search for `q` (with `filter` and paging) returns.
async fn search(store: &dyn Store, q: &str, filter: Filter, after: Option<u64>, limit: usize) -> Vec<u64> {
    let text = crate::search::SearchQuery::parse(q).unwrap();
    let query = Query { filter, after, limit, text, ..Query::default() };
    store.query(query).await.unwrap().iter().map(|e| e.seq).collect()
}

/// On an empty store: full-text search finds words of the display text and of data
/// values, case-insensitively; several words must all match; a quoted phrase must be
/// whole and in order; `word*` is a prefix; it combines with every filter and pages by
/// seq; and FTS syntax typed by a user is matched as words, never run.
pub(crate) async fn search_matches_words_phrases_prefixes_with_filters_and_paging(store: &dyn Store) {
    use crate::filter::FilterSpec;
    use serde_json::json;
    let mut w = store.writer().await.unwrap();
    let events = vec![
        event_with("s1", "system.error", "node-a", None, json!({"message": "Disk FULL on /var"})),
        event_with(
            "s2",
            "system.warning",
            "node-b",
            None,
            json!({"message": "full disk soon", "host": {"name": "db-7"}}),
        ),
        event_with("s3", "task.assigned", "coordinator", Some("forge"), json!({"bid_sats": 42})),
        event_with("s4", "tool.failed", "forge", Some("forge"), json!({"tool_name": "diskutil", "args": ["--full"]})),
        event_with("s5", "system.error", "node-a", None, json!({"message": "disk full again", "code": 28})),
        event_with("s6", "custom.thing", "node-c", None, json!({"note": "NEAR(x y) \"quoted\" AND OR"})),
    ];
    w.append(events).await.unwrap();
    assert_eq!(crate::search::catch_up(store).await.unwrap(), 6);
    let none = Filter::default;
    assert_eq!(search(store, "disk", none(), None, 10).await, vec![1, 2, 5], "a word, any case");
    assert_eq!(search(store, "DISK full", none(), None, 10).await, vec![1, 2, 5], "all words, any order");
    assert_eq!(search(store, "\"disk full\"", none(), None, 10).await, vec![1, 5], "a phrase, in order");
    assert_eq!(search(store, "disk-full", none(), None, 10).await, vec![1, 5], "joined words are a phrase");
    assert_eq!(search(store, "dis*", none(), None, 10).await, vec![1, 2, 4, 5], "a prefix");
    assert_eq!(search(store, "forge 42", none(), None, 10).await, vec![3], "the display text: agent and sats");
    assert_eq!(search(store, "db 7", none(), None, 10).await, vec![2], "nested data values");
    assert_eq!(search(store, "28", none(), None, 10).await, vec![5], "numbers in data");
    assert_eq!(search(store, "thing", none(), None, 10).await, vec![6], "an unknown type displays as its name");
    assert!(search(store, "dis", none(), None, 10).await.is_empty(), "no prefix without *");
    assert!(search(store, "disk nowhere", none(), None, 10).await.is_empty(), "every word must match");
    // What FTS5 or to_tsquery would read as operators is only words here.
    assert_eq!(search(store, "NEAR(x", none(), None, 10).await, vec![6]);
    assert_eq!(search(store, "\"quoted\" AND OR", none(), None, 10).await, vec![6]);
    assert_eq!(search(store, "x) | !y & 'z", none(), None, 10).await, Vec::<u64>::new());

    let spec = |f: FilterSpec| Filter::from_spec(f).unwrap();
    let errors = spec(FilterSpec { types: vec!["system.*".into()], ..Default::default() });
    assert_eq!(search(store, "full", errors, None, 10).await, vec![1, 2, 5], "with types");
    let node_a = spec(FilterSpec { source: Some("node-a".into()), ..Default::default() });
    assert_eq!(search(store, "disk", node_a, None, 10).await, vec![1, 5], "with source");
    let forge = spec(FilterSpec { agent_id: Some("forge".into()), ..Default::default() });
    assert_eq!(search(store, "dis*", forge, None, 10).await, vec![4], "with agent");
    let task = spec(FilterSpec { task_id: Some("task-of-forge".into()), ..Default::default() });
    assert_eq!(search(store, "diskutil", task, None, 10).await, vec![4], "with task");
    assert_eq!(search(store, "disk", none(), None, 2).await, vec![1, 2], "a first page");
    assert_eq!(search(store, "disk", none(), Some(2), 2).await, vec![5], "the next page, after the last seq");
    let newest = Query {
        text: crate::search::SearchQuery::parse("disk").unwrap(),
        order: Order::Desc,
        limit: 2,
        ..Query::default()
    };
    let got: Vec<u64> = store.query(newest).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(got, vec![5, 2], "newest first");

    // Events committed after a catch-up are found once indexed, and only then.
    w.append(vec![event_with("s7", "system.info", "node-a", None, json!({"message": "disk replaced"}))]).await.unwrap();
    assert!(search(store, "replaced", none(), None, 10).await.is_empty());
    assert_eq!(store.search_position().await.unwrap(), 6);
    assert_eq!(crate::search::catch_up(store).await.unwrap(), 7);
    assert_eq!(search(store, "replaced", none(), None, 10).await, vec![7]);
}

/// On an empty store: the index drops the words of events retention pruned, and a log
/// pruned past the index's position moves the position on, past what it never saw.
/// Each engine's test then finds no index row with the word `common`, which only the
/// pruned events held.
pub(crate) async fn pruned_events_leave_the_search_index(store: &dyn Store) {
    let mut w = store.writer().await.unwrap();
    let events = (0..6).map(|i| {
        event_with(
            &format!("r{i}"),
            "system.info",
            "t",
            None,
            serde_json::json!({"message": format!("word{i} common")}),
        )
    });
    w.append(events.collect()).await.unwrap();
    crate::search::catch_up(store).await.unwrap();
    assert_eq!(search(store, "common", Filter::default(), None, 10).await, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(store.delete_before(4, 100).await.unwrap(), 3);
    assert_eq!(search(store, "common", Filter::default(), None, 10).await, vec![4, 5, 6], "pruned: never found");
    crate::search::catch_up(store).await.unwrap();
    // Pruned before the index took them in: passed over.
    let later =
        (6..9).map(|i| event_with(&format!("r{i}"), "system.info", "t", None, serde_json::json!({"message": "late"})));
    w.append(later.collect()).await.unwrap();
    assert_eq!(store.delete_before(9, 100).await.unwrap(), 5);
    assert_eq!(crate::search::catch_up(store).await.unwrap(), 9);
    assert_eq!(store.search_position().await.unwrap(), 9);
    assert_eq!(search(store, "common", Filter::default(), None, 10).await, Vec::<u64>::new());
}
