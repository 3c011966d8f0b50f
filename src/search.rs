//! Full-text search of the log (DESIGN §10): what `q=` means, which words find an
//! event, and the indexer that keeps the index a step behind the writer.
//!
//! Owns the words. Both stores are given words already split and lowercased here, one
//! tokenizer for the event's text and for the query, so SQLite's FTS5 and PostgreSQL's
//! `tsvector` (configuration `simple`) index and match the same words. A query is
//! parsed into [`SearchQuery`] at the edge and written out in each engine's query
//! language from words that are letters and digits only, quoted: nothing a user types
//! reaches FTS5's or `to_tsquery`'s syntax as an operator.
//!
//! The index is not written by the writer, the one serial step of ingest, but by
//! [`run_indexer`], a follower of the log: it has the store read committed events past
//! the index's stored position, a batch at a time, and store their words with the new
//! position in one transaction, so a restart resumes where it stopped and a log that
//! predates the index is indexed from seq 0. It also drops the words of events
//! retention pruned. Searches see an event once it is indexed: at most
//! [`INDEX_INTERVAL`] plus one batch's work after its commit while ingest runs below
//! about 20 000 events a second; during faster bursts the indexer yields to the writer
//! ([`BUSY_PAUSE`]) and catches up after. [`SearchProgress`] tells how far behind it is.
//! Owns nothing of the log itself, and does not decide what a search returns beyond
//! its words: the store's query joins the index with the log's other filters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::event::render_display;
use crate::store::{Store, StoreError};

/// Longest `q` accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most terms (words, prefixes or phrases) one `q` may hold; all must match.
pub const MAX_TERMS: usize = 16;
/// Longest word kept, in characters; a longer run of letters is cut to this, in the
/// index and in a query alike, so a blob of base64 costs one bounded word.
const MAX_WORD_CHARS: usize = 64;
/// Most words one event is indexed by. An event's data is at most 16 KiB, about
/// 3 000 words; this bounds it whatever the configured data limit.
const MAX_DOCUMENT_WORDS: usize = 4_000;

/// Events the indexer reads and indexes per transaction.
pub(crate) const INDEX_BATCH: usize = 2_000;
/// How often the indexer looks for newly committed events when it has caught up. A
/// search lags the log by about this plus one batch's work: well inside DESIGN §10's
/// second.
pub(crate) const INDEX_INTERVAL: Duration = Duration::from_millis(200);
/// The pause between two batches while ingest is busy (the head grew by at least
/// [`BUSY_GROWTH`] during the last batch): the indexer then takes at most
/// [`INDEX_BATCH`] events per pause, 20 000 a second, and catches up at full speed once
/// ingest slows. Without it, indexing back to back beside a writer at full speed took
/// in-process ingest from about 165 000 to 130 000 events/s (`swarmfeed-bench
/// ingest-local`), though its thread runs at a lower priority and kept up: what the
/// two share is then not CPU time but, most likely, the disk the writer fsyncs.
const BUSY_PAUSE: Duration = Duration::from_millis(100);
/// Growth of the head during one batch above which ingest counts as busy.
const BUSY_GROWTH: u64 = INDEX_BATCH as u64 / 2;
/// How long the indexer waits after a failed store call before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a `q` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    #[error("q is longer than {MAX_QUERY_CHARS} characters")]
    TooLong,
    #[error("q has no words to search for (only letters and digits are searched)")]
    NoWords,
    #[error("q has more than {MAX_TERMS} words or phrases")]
    TooManyTerms,
}

/// One thing every match must contain: a word, a word's prefix, or a phrase (words
/// next to each other, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    /// One word, or the words of a phrase, lowercased; letters and digits only.
    words: Vec<String>,
    /// The last word is a prefix (`disk*`).
    prefix: bool,
}

/// A parsed `q`: every term must match (AND).
///
/// Syntax: words separated by spaces; `"a phrase in quotes"`; a word ending in `*` is
/// a prefix. Anything that is not a letter or a digit separates words, so `disk-full`
/// is the phrase `"disk full"`, and punctuation never acts as an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    terms: Vec<Term>,
}

impl SearchQuery {
    /// Parses `q`; `Ok(None)` when it is blank (no search).
    ///
    /// # Errors
    /// [`BadQuery`] when it is too long, has nothing to search for, or too many terms.
    pub fn parse(q: &str) -> Result<Option<Self>, BadQuery> {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(BadQuery::TooLong);
        }
        if q.trim().is_empty() {
            return Ok(None);
        }
        let mut terms = Vec::new();
        // Odd pieces between quotes are phrases; an unclosed quote runs to the end.
        for (i, piece) in q.split('"').enumerate() {
            if i % 2 == 1 {
                terms.extend(term(piece, false));
            } else {
                for chunk in piece.split_whitespace() {
                    terms.extend(term(chunk, chunk.ends_with('*')));
                }
            }
        }
        if terms.is_empty() {
            return Err(BadQuery::NoWords);
        }
        if terms.len() > MAX_TERMS {
            return Err(BadQuery::TooManyTerms);
        }
        Ok(Some(SearchQuery { terms }))
    }

    /// The query in FTS5's language: each term a quoted phrase (`"disk full"`, a prefix
    /// `"dis"*`), side by side, which FTS5 reads as AND.
    pub(crate) fn fts5(&self) -> String {
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|t| format!("\"{}\"{}", t.words.join(" "), if t.prefix { "*" } else { "" }))
            .collect();
        terms.join(" ")
    }

    /// The query in `to_tsquery`'s language: each word a quoted lexeme, a phrase joined
    /// by `<->`, a prefix marked `:*`, terms joined by `&`.
    pub(crate) fn tsquery(&self) -> String {
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let mut words: Vec<String> = t.words.iter().map(|w| format!("'{w}'")).collect();
                if t.prefix
                    && let Some(last) = words.last_mut()
                {
                    last.push_str(":*");
                }
                format!("({})", words.join(" <-> "))
            })
            .collect();
        terms.join(" & ")
    }
}

fn term(text: &str, prefix: bool) -> Option<Term> {
    let words: Vec<String> = words(text).collect();
    (!words.is_empty()).then_some(Term { words, prefix })
}

/// The words of `text`: runs of letters and digits, lowercased, each cut to
/// [`MAX_WORD_CHARS`].
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().take(MAX_WORD_CHARS).flat_map(char::to_lowercase).collect())
}

/// The words an event is found by: its display text (the known-type table's, as every
/// view shows it) and every string, number and boolean in its data, at any depth,
/// separated by spaces.
pub(crate) fn document(
    event_type: &str,
    agent_id: Option<&str>,
    data: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut doc = Doc { out: String::new(), count: 0 };
    doc.push(&render_display(event_type, agent_id, data));
    for value in data.values() {
        doc.value(value);
    }
    doc.out
}

struct Doc {
    out: String,
    count: usize,
}

impl Doc {
    fn push(&mut self, text: &str) {
        for w in words(text) {
            if self.count == MAX_DOCUMENT_WORDS {
                return;
            }
            if !self.out.is_empty() {
                self.out.push(' ');
            }
            self.out.push_str(&w);
            self.count += 1;
        }
    }

    fn value(&mut self, v: &serde_json::Value) {
        match v {
            serde_json::Value::String(s) => self.push(s),
            serde_json::Value::Number(n) => self.push(&n.to_string()),
            serde_json::Value::Bool(b) => self.push(if *b { "true" } else { "false" }),
            serde_json::Value::Array(items) => items.iter().for_each(|i| self.value(i)),
            serde_json::Value::Object(map) => map.values().for_each(|i| self.value(i)),
            serde_json::Value::Null => {}
        }
    }
}

/// How far the index has come: the last seq it took in. Shared by handle between the
/// indexer, which sets it, and `/metrics` and the events page, which read it.
#[derive(Debug, Clone, Default)]
pub struct SearchProgress(Arc<AtomicU64>);

impl SearchProgress {
    pub fn indexed(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Events committed up to `head` that a search cannot find yet.
    pub fn lag(&self, head: u64) -> u64 {
        head.saturating_sub(self.indexed())
    }

    fn set(&self, seq: u64) {
        self.0.store(seq, Ordering::Relaxed);
    }
}

/// Indexes the log for search until `stop`: first whatever the index has not taken in
/// (all of an existing log on the first start), then each new commit within
/// [`INDEX_INTERVAL`]. A store error is logged and retried: search lags meanwhile,
/// ingest does not notice.
pub async fn run_indexer(store: Arc<dyn Store>, progress: SearchProgress, stop: CancellationToken) {
    let mut position = None;
    // The oldest seq whose index rows were last dropped below; rows are dropped only
    // when retention has moved it, not on every round.
    let mut swept = 0;
    let mut head = 0;
    loop {
        let (caught_up, busy) = match index_once(store.as_ref(), &mut position, &mut swept).await {
            Ok(round) => {
                let busy = round.head.saturating_sub(head) >= BUSY_GROWTH;
                head = round.head;
                (!round.full, busy)
            }
            Err(e) => {
                tracing::warn!(error = %e, "search indexing failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
                continue;
            }
        };
        if let Some(p) = position {
            progress.set(p);
        }
        if stop.is_cancelled() {
            return;
        }
        let pause = if caught_up {
            INDEX_INTERVAL
        } else if busy {
            BUSY_PAUSE
        } else {
            continue;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// What one round of the indexer saw.
struct Round {
    /// The batch was full: more may wait.
    full: bool,
    /// The log's head when the round began.
    head: u64,
}

/// Indexes every event committed so far, in batches, and returns the position
/// reached: what the indexer does at start, for tests and tools that need the index
/// current now.
///
/// # Errors
/// A store call failed; the batches before it stay indexed.
pub async fn catch_up(store: &dyn Store) -> Result<u64, StoreError> {
    let (mut position, mut swept) = (None, 0);
    while index_once(store, &mut position, &mut swept).await?.full {}
    Ok(position.unwrap_or_default())
}

/// One batch: indexes up to [`INDEX_BATCH`] events past the index's position, and
/// drops the rows of pruned events once retention has moved the oldest seq.
async fn index_once(store: &dyn Store, position: &mut Option<u64>, swept: &mut u64) -> Result<Round, StoreError> {
    let from = match *position {
        Some(p) => p,
        None => store.search_position().await?,
    };
    let bounds = store.bounds().await?;
    let oldest = bounds.oldest;
    let drop_below = (oldest > *swept).then_some(oldest);
    let done = store.index_for_search(from, INDEX_BATCH, drop_below).await?;
    if let Some(oldest) = drop_below {
        *swept = oldest;
    }
    *position = Some(done.position);
    Ok(Round { full: done.events == INDEX_BATCH, head: bounds.head })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> SearchQuery {
        SearchQuery::parse(s).unwrap().unwrap()
    }

    #[test]
    fn words_are_lowercased_runs_of_letters_and_digits() {
        let got: Vec<String> = words("Disk FULL on /dev/sda1: 93.5% — Ärger_x").collect();
        assert_eq!(got, ["disk", "full", "on", "dev", "sda1", "93", "5", "ärger", "x"]);
    }

    #[test]
    fn several_words_phrases_and_prefixes_become_quoted_terms() {
        let parsed = q(r#"Disk "write failed" sd*"#);
        assert_eq!(parsed.fts5(), r#""disk" "write failed" "sd"*"#);
        assert_eq!(parsed.tsquery(), "('disk') & ('write' <-> 'failed') & ('sd':*)");
        assert_eq!(q("disk-full").fts5(), r#""disk full""#);
    }

    #[test]
    fn query_syntax_typed_by_a_user_is_only_ever_words() {
        for hostile in [r#"NEAR(a b) OR "x"#, "a' | b & !c", r#"" AND col:"*"#, "x) OR (y", "^a* -b +c"] {
            let parsed = q(hostile);
            for t in &parsed.terms {
                assert!(t.words.iter().all(|w| w.chars().all(char::is_alphanumeric)), "{hostile}: {t:?}");
            }
        }
        assert_eq!(q(r#"unclosed "quote here"#).fts5(), r#""unclosed" "quote here""#);
    }

    #[test]
    fn blank_punctuation_long_and_crowded_queries_are_told_apart() {
        assert_eq!(SearchQuery::parse("   "), Ok(None));
        assert_eq!(SearchQuery::parse(r#"!!! "" *"#), Err(BadQuery::NoWords));
        assert_eq!(SearchQuery::parse(&"a".repeat(MAX_QUERY_CHARS + 1)), Err(BadQuery::TooLong));
        let crowded = (0..=MAX_TERMS).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(SearchQuery::parse(&crowded), Err(BadQuery::TooManyTerms));
    }

    #[test]
    fn a_document_holds_the_display_text_and_every_data_value() {
        let data = serde_json::json!({"message": "Disk full", "host": {"name": "db-1"}, "n": [7, true, null]});
        let doc = document("system.error", None, data.as_object().unwrap());
        assert_eq!(doc, "disk full db 1 disk full 7 true");
        let doc = document("custom.thing", Some("a1"), &serde_json::Map::new());
        assert_eq!(doc, "custom thing");
    }
}
