//! What limits a shared log: commits per second through the PostgreSQL store alone,
//! for 1 to 3 writers (one per node) and several group sizes, with no HTTP in the way.
//!
//! Every writer of every node takes the same counter-row lock for the length of its
//! transaction, so commits run one at a time; this shows what that costs.
//!
//! ```text
//! cargo run --release --example pg_commit_rate [postgres://postgres@127.0.0.1:5432/postgres]
//! ```
//!
//! Each case runs on a database of its own, dropped afterwards. Bounded: a fixed number
//! of commits per case.

use std::time::Instant;

use swarmfeed::event::NewEvent;
use swarmfeed::store::Store;
use swarmfeed::store::postgres::{PostgresStore, create_database, drop_database};

/// (writers, events per commit, commits per writer)
const CASES: &[(usize, usize, usize)] =
    &[(1, 1000, 100), (2, 1000, 50), (3, 1000, 34), (1, 100, 300), (3, 100, 100), (1, 1, 500), (3, 1, 170)];

fn event(writer: usize, i: usize) -> NewEvent {
    NewEvent {
        id: format!("w{writer}-{i}"),
        event_type: "tool.called".into(),
        source: "bench".into(),
        task_id: None,
        agent_id: Some(format!("a{}", i % 8)),
        data: format!(r#"{{"tool_name":"grep","n":{i},"args":["-r","pattern","./src"]}}"#),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::args().nth(1).unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    println!("writers  group  events/s  commits/s  commit ms p50  p90");
    for &(writers, group, commits) in CASES {
        let name = format!("sfbench_commit_{}", std::process::id());
        let url = create_database(&server, &name).await?;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let store = PostgresStore::connect(&url, 1).await?;
                let mut writer = store.writer().await?;
                let mut took = Vec::with_capacity(commits);
                for c in 0..commits {
                    let t = Instant::now();
                    writer.append((0..group).map(|i| event(w, c * group + i)).collect()).await?;
                    took.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, swarmfeed::store::StoreError>(took)
            }));
        }
        let mut took = Vec::new();
        for t in tasks {
            took.extend(t.await??);
        }
        let secs = start.elapsed().as_secs_f64();
        took.sort_by(f64::total_cmp);
        println!(
            "{writers:>7}  {group:>5}  {:>8.0}  {:>9.0}  {:>13.1}  {:>4.1}",
            (writers * group * commits) as f64 / secs,
            (writers * commits) as f64 / secs,
            took[took.len() / 2],
            took[took.len() * 9 / 10],
        );
        drop_database(&server, &name).await?;
    }
    Ok(())
}
