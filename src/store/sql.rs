//! The SQL both engines share: the event columns and the text of a [`Query`].
//!
//! SQLite and PostgreSQL accept the same statement for a read of the log; only the
//! placeholder differs (`?N` and `$N`). Building it once keeps the filters, windows
//! and order of the two stores identical by construction. Each engine binds the
//! [`Arg`]s in its own way.

use super::{Order, Query};
use crate::filter::TypePattern;

/// The columns of `events`, in the order `event_from_row` of each engine reads them.
pub(crate) const EVENT_COLUMNS: &str = "seq, id, event_type, source, task_id, agent_id, ts_ms, data";

/// The columns of a token record, in the order both stores read them.
pub(crate) const TOKEN_COLUMNS: &str = "id, name, scope, created_ms, revoked_ms";

/// The columns of a session record, read from `sessions s JOIN tokens t`, in the
/// order both stores read them.
pub(crate) const SESSION_COLUMNS: &str = "s.id, s.token_id, t.name, t.scope, s.created_ms, s.last_used_ms";

/// The columns of an alert rule, in the order both stores read them.
pub(crate) const ALERT_RULE_COLUMNS: &str = "id, name, filter, threshold, window_secs, absent_secs, created_ms";
/// The columns of a webhook record, in the order both stores read them.
pub(crate) const WEBHOOK_COLUMNS: &str = "id, url, filter, format, secret, delivered_seq, created_ms, last_status, \
     last_error, failing_since_ms, last_attempt_ms";

/// A bound value of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    /// SQL `NULL` in a text column (PostgreSQL checks a parameter's type even when null).
    NullText,
    /// SQL `NULL` in an integer column.
    NullInt,
}

/// How an engine finds the seqs whose words match a full-text search: the one piece
/// of a read that differs between them besides the placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextSearch {
    /// SQLite: FTS5 table `event_text` in the attached `search` database, rowid = seq.
    Fts5,
    /// PostgreSQL: table `event_search`, a `tsvector` under a GIN index.
    TsQuery,
}

impl TextSearch {
    /// The condition on `seq`, with the query's text bound at `placeholder`, and that
    /// text in the engine's query language.
    fn clause(self, placeholder: &str, q: &crate::search::SearchQuery) -> (String, Arg) {
        match self {
            TextSearch::Fts5 => (
                format!("seq IN (SELECT rowid FROM search.event_text WHERE event_text MATCH {placeholder})"),
                Arg::Text(q.fts5()),
            ),
            TextSearch::TsQuery => (
                format!("seq IN (SELECT seq FROM event_search WHERE doc @@ to_tsquery('simple', {placeholder}))"),
                Arg::Text(q.tsquery()),
            ),
        }
    }
}

/// Builds the SQL of a [`Query`], numbering placeholders `{prefix}1`, `{prefix}2`, ….
/// Type prefixes become a range on the type index: `task.` matches
/// `event_type >= 'task.' AND event_type < 'task/'` ('/' follows '.'), which needs a
/// bytewise collation (SQLite's default, `COLLATE "C"` in PostgreSQL).
pub(crate) fn query_sql(q: &Query, prefix: char, search: TextSearch) -> (String, Vec<Arg>) {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1");
    let mut args: Vec<Arg> = Vec::new();
    let f = &q.filter;
    if !f.type_patterns().is_empty() {
        let mut alternatives = Vec::new();
        for p in f.type_patterns() {
            match p {
                TypePattern::Exact(t) => {
                    args.push(Arg::Text(t.clone()));
                    alternatives.push(format!("event_type = {prefix}{}", args.len()));
                }
                TypePattern::Prefix(p) => {
                    args.push(Arg::Text(p.clone()));
                    let lo = args.len();
                    args.push(Arg::Text(format!("{}/", &p[..p.len() - 1])));
                    alternatives.push(format!("(event_type >= {prefix}{lo} AND event_type < {prefix}{})", args.len()));
                }
            }
        }
        sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    let mut eq = |column: &str, value: Option<&str>| {
        if let Some(v) = value {
            args.push(Arg::Text(v.to_owned()));
            sql.push_str(&format!(" AND {column} = {prefix}{}", args.len()));
        }
    };
    eq("task_id", f.task_id());
    eq("agent_id", f.agent_id());
    eq("source", f.source());
    let mut cmp = |clause: &str, value: Option<i64>| {
        if let Some(v) = value {
            args.push(Arg::Int(v));
            sql.push_str(&format!(" AND {clause} {prefix}{}", args.len()));
        }
    };
    cmp("seq >", q.after.map(|s| s.min(i64::MAX as u64) as i64));
    cmp("seq <", q.before.map(|s| s.min(i64::MAX as u64) as i64));
    cmp("ts_ms >=", q.from_ms);
    cmp("ts_ms <=", q.to_ms);
    if let Some(text) = &q.text {
        let (clause, arg) = search.clause(&format!("{prefix}{}", args.len() + 1), text);
        args.push(arg);
        sql.push_str(&format!(" AND {clause}"));
    }
    sql.push_str(match q.order {
        Order::Asc => " ORDER BY seq ASC",
        Order::Desc => " ORDER BY seq DESC",
    });
    args.push(Arg::Int(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(" LIMIT {prefix}{}", args.len()));
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;

    #[test]
    fn both_placeholder_styles_number_the_same_arguments() {
        let filter = Filter::from_spec(crate::filter::FilterSpec {
            types: vec!["task.*".into(), "bid.submitted".into()],
            ..Default::default()
        })
        .unwrap();
        let q = Query { filter, after: Some(3), order: Order::Desc, limit: 10, ..Query::default() };
        let (lite, lite_args) = query_sql(&q, '?', TextSearch::Fts5);
        let (pg, pg_args) = query_sql(&q, '$', TextSearch::TsQuery);
        assert_eq!(lite.replace('?', "$"), pg);
        assert_eq!(lite_args, pg_args);
        assert!(pg.contains("(event_type >= $1 AND event_type < $2) OR event_type = $3"), "{pg}");
        assert!(pg.ends_with("AND seq > $4 ORDER BY seq DESC LIMIT $5"), "{pg}");
        assert_eq!(pg_args[1], Arg::Text("task/".into()));
    }

    #[test]
    fn a_search_is_one_more_bound_condition_in_each_engines_language() {
        let text = crate::search::SearchQuery::parse("disk full").unwrap();
        let q = Query { after: Some(3), limit: 10, text, ..Query::default() };
        let (lite, lite_args) = query_sql(&q, '?', TextSearch::Fts5);
        let (pg, pg_args) = query_sql(&q, '$', TextSearch::TsQuery);
        assert!(lite.contains("AND seq IN (SELECT rowid FROM search.event_text WHERE event_text MATCH ?2)"), "{lite}");
        assert!(pg.contains("AND seq IN (SELECT seq FROM event_search WHERE doc @@ to_tsquery('simple', $2))"), "{pg}");
        assert_eq!(lite_args[1], Arg::Text(r#""disk" "full""#.into()));
        assert_eq!(pg_args[1], Arg::Text("('disk') & ('full')".into()));
        assert!(pg.ends_with("ORDER BY seq ASC LIMIT $3"), "{pg}");
    }
}
