//! Behaviour every store must show, written once and run against each engine's tests.

use super::{Appended, Bounds, Order, Query, Store};
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
