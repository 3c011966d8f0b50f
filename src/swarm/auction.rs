//! Auction rules (DESIGN §7): who wins a closed auction, and what a bid must be.
//!
//! Pure functions over the projection; the coordinator decides *when* to call them.

use super::projection::{AgentStatus, Projection, Task};

/// Largest bid accepted, in sats: bounds arithmetic on totals far from overflow.
pub(crate) const MAX_BID_SATS: u64 = 1_000_000_000_000;

/// How a closed auction ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// The lowest bid from an agent still online wins; the earliest bid on a tie.
    Assigned {
        agent_id: String,
        agent_name: String,
        bid_sats: u64,
    },
    NoBids,
}

/// Settles `task`'s auction against the swarm as it is now. Bids from agents that have
/// gone offline since bidding no longer count.
pub(crate) fn settle(task: &Task, swarm: &Projection) -> Settlement {
    let online = |id: &str| swarm.agent(id).is_some_and(|a| a.status != AgentStatus::Offline);
    match task.best_bid(online) {
        Some(bid) => Settlement::Assigned {
            agent_id: bid.agent_id.clone(),
            agent_name: swarm.agent(&bid.agent_id).map_or_else(|| bid.agent_id.clone(), |a| a.name.clone()),
            bid_sats: bid.bid_sats,
        },
        None => Settlement::NoBids,
    }
}

/// Checks a bid amount.
///
/// # Errors
/// The reason, when it is not a positive integer up to [`MAX_BID_SATS`].
pub(crate) fn check_bid(bid_sats: u64) -> Result<u64, String> {
    if bid_sats == 0 {
        Err("bid_sats must be a positive integer".into())
    } else if bid_sats > MAX_BID_SATS {
        Err(format!("bid_sats must be at most {MAX_BID_SATS}"))
    } else {
        Ok(bid_sats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventParts};
    use proptest::prelude::*;
    use serde_json::json;

    fn event(seq: u64, event_type: &str, task: Option<&str>, agent: Option<&str>, data: serde_json::Value) -> Event {
        Event::encode(EventParts {
            seq,
            id: &format!("e{seq}"),
            event_type,
            source: "t",
            task_id: task,
            agent_id: agent,
            ts_ms: seq as i64,
            data: &data.to_string(),
        })
        .unwrap()
    }

    fn swarm(bids: &[(usize, u64)], offline: &[usize]) -> Projection {
        let mut p = Projection::default();
        let mut seq = 0;
        let mut next = |p: &mut Projection, t: &str, task: Option<&str>, agent: Option<&str>, data| {
            seq += 1;
            p.apply(&event(seq, t, task, agent, data));
        };
        for a in 0..5 {
            next(&mut p, "agent.joined", None, Some(&format!("a{a}")), json!({"name": format!("A{a}")}));
        }
        next(&mut p, "task.created", Some("t"), None, json!({"description": "d"}));
        next(&mut p, "task.bidding", Some("t"), None, json!({}));
        for (agent, sats) in bids {
            next(&mut p, "bid.submitted", Some("t"), Some(&format!("a{agent}")), json!({"bid_sats": sats}));
        }
        for a in offline {
            next(&mut p, "agent.left", None, Some(&format!("a{a}")), json!({}));
        }
        p
    }

    #[test]
    fn lowest_bid_wins_and_earliest_breaks_ties() {
        let p = swarm(&[(0, 50), (1, 20), (2, 20), (3, 70)], &[]);
        let s = settle(p.task("t").unwrap(), &p);
        assert_eq!(s, Settlement::Assigned { agent_id: "a1".into(), agent_name: "A1".into(), bid_sats: 20 });
    }

    #[test]
    fn bids_of_agents_gone_offline_do_not_count() {
        let p = swarm(&[(0, 50), (1, 20)], &[1]);
        assert!(matches!(settle(p.task("t").unwrap(), &p), Settlement::Assigned { bid_sats: 50, .. }));
        let p = swarm(&[(1, 20)], &[1]);
        assert_eq!(settle(p.task("t").unwrap(), &p), Settlement::NoBids);
    }

    #[test]
    fn bids_must_be_positive_and_bounded() {
        assert!(check_bid(0).is_err());
        assert!(check_bid(MAX_BID_SATS + 1).is_err());
        assert_eq!(check_bid(1), Ok(1));
    }

    proptest! {
        // Whatever the bids, the winner's bid is the minimum, and no earlier bid has it.
        #[test]
        fn the_winner_is_the_earliest_minimum(bids in proptest::collection::vec((0usize..5, 1u64..100), 1..20)) {
            let p = swarm(&bids, &[]);
            let Settlement::Assigned { agent_id, bid_sats, .. } = settle(p.task("t").unwrap(), &p) else {
                panic!("bids exist");
            };
            let min = bids.iter().map(|b| b.1).min().unwrap();
            prop_assert_eq!(bid_sats, min);
            let first = bids.iter().find(|b| b.1 == min).unwrap();
            prop_assert_eq!(agent_id, format!("a{}", first.0));
        }
    }
}
