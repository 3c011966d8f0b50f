//! The swarm's events as types: one [`SwarmEvent`] variant per event type the swarm
//! reads or writes, with its typed data.
//!
//! JSON appears only here, at the edge with the log: [`SwarmEvent::decode`] reads a
//! committed [`Event`], [`SwarmEvent::to_json`] makes the object the coordinator
//! hands to ingest. Decoding is as lenient as the fold has always been with events an
//! external producer wrote: a field the fold can do without defaults (a missing name
//! is the agent's id, a missing reason is `"unknown"`), and an event the fold cannot
//! use at all (no task id, a bid without a whole number of sats) decodes to `None`
//! and changes nothing but the counts. Swarm-namespaced types the swarm does not read
//! (`agent.heartbeat`, `auction.opened`, …) decode to `None` too. Decoding never fails
//! and never panics.

use serde_json::{Map, Value, json};

use super::projection::{AgentStatus, event_data};
use crate::event::{Event, format_timestamp, parse_timestamp};

/// What an agent reported about a tool call; each is its own event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolStatus {
    Called,
    Completed,
    Failed,
}

impl ToolStatus {
    /// The status as the API takes it (`"called"`, …), or `None` when it is not one.
    pub(crate) fn parse(status: &str) -> Option<Self> {
        match status {
            "called" => Some(ToolStatus::Called),
            "completed" => Some(ToolStatus::Completed),
            "failed" => Some(ToolStatus::Failed),
            _ => None,
        }
    }

    pub(crate) fn event_type(self) -> &'static str {
        match self {
            ToolStatus::Called => "tool.called",
            ToolStatus::Completed => "tool.completed",
            ToolStatus::Failed => "tool.failed",
        }
    }
}

/// One swarm event and its data. Times are not here: an event's time is its commit
/// time, which the log gives.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SwarmEvent {
    /// `agent.joined`: the agent is online and idle.
    AgentJoined { agent_id: String, name: String, capabilities: Vec<String> },
    /// `agent.left`: the agent is offline (`reason` is `left`, `timeout` or `removed`).
    AgentLeft { agent_id: String, name: String, reason: String },
    /// `agent.status_changed`: what the agent says it is doing; `None` when it said
    /// something other than `idle` or `busy`, which changes nothing.
    AgentStatusChanged { agent_id: String, name: String, status: Option<AgentStatus> },
    /// `task.created`; `retry_of` names the failed or cancelled task it retries.
    TaskCreated { task_id: String, description: String, retry_of: Option<String> },
    /// `task.bidding`: the auction is open until `closes_ms`.
    TaskBidding { task_id: String, closes_ms: Option<i64>, window_secs: Option<f64> },
    /// `bid.submitted`.
    BidSubmitted { task_id: String, agent_id: String, bid_sats: u64, agent_name: String },
    /// `auction.closed`: no more bids count; `winner` is the winning agent and bid.
    AuctionClosed { task_id: String, bids: u64, winner: Option<(String, u64)> },
    /// `task.assigned`: the winner and its bid.
    TaskAssigned { task_id: String, agent_id: String, bid_sats: Option<u64>, agent_name: String },
    /// `task.started`.
    TaskStarted { task_id: String, agent_id: Option<String> },
    /// `tool.called`, `tool.completed` or `tool.failed`, with whatever else the agent
    /// reported about the call (arguments, duration, …) in `data`.
    Tool { task_id: String, agent_id: Option<String>, status: ToolStatus, tool_name: String, data: Map<String, Value> },
    /// `task.completed`; `result` is what the agent reported, any JSON.
    TaskCompleted { task_id: String, agent_id: Option<String>, result: Option<Value> },
    /// `task.failed`.
    TaskFailed { task_id: String, agent_id: Option<String>, reason: String },
    /// `task.cancelled`: an operator stopped the task before it finished; `agent_id`
    /// is the agent it was assigned to, if any.
    TaskCancelled { task_id: String, agent_id: Option<String>, reason: String },
}

/// A task's result as it is shown: text as it is, any other JSON as its JSON.
pub(crate) fn result_text(result: Value) -> String {
    match result {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

fn text(data: &Map<String, Value>, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl SwarmEvent {
    /// The event type it is stored under.
    pub(crate) fn event_type(&self) -> &'static str {
        match self {
            SwarmEvent::AgentJoined { .. } => "agent.joined",
            SwarmEvent::AgentLeft { .. } => "agent.left",
            SwarmEvent::AgentStatusChanged { .. } => "agent.status_changed",
            SwarmEvent::TaskCreated { .. } => "task.created",
            SwarmEvent::TaskBidding { .. } => "task.bidding",
            SwarmEvent::BidSubmitted { .. } => "bid.submitted",
            SwarmEvent::AuctionClosed { .. } => "auction.closed",
            SwarmEvent::TaskAssigned { .. } => "task.assigned",
            SwarmEvent::TaskStarted { .. } => "task.started",
            SwarmEvent::Tool { status, .. } => status.event_type(),
            SwarmEvent::TaskCompleted { .. } => "task.completed",
            SwarmEvent::TaskFailed { .. } => "task.failed",
            SwarmEvent::TaskCancelled { .. } => "task.cancelled",
        }
    }

    /// The swarm event a committed event is, or `None` when it is not one the swarm
    /// reads (another type, or one without the ids or data the fold needs).
    pub(crate) fn decode(event: &Event) -> Option<SwarmEvent> {
        let kind = &*event.event_type;
        if !super::projection::is_swarm_type(kind) {
            return None;
        }
        let data = event_data(event);
        let task_id = event.task_id.as_deref().map(str::to_owned);
        let agent_id = event.agent_id.as_deref().map(str::to_owned);
        let decoded = match kind {
            "agent.joined" => {
                let agent_id = agent_id?;
                SwarmEvent::AgentJoined {
                    name: text(&data, "name").unwrap_or_else(|| agent_id.clone()),
                    capabilities: data
                        .get("capabilities")
                        .and_then(Value::as_array)
                        .map(|c| c.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                        .unwrap_or_default(),
                    agent_id,
                }
            }
            "agent.left" => SwarmEvent::AgentLeft {
                agent_id: agent_id?,
                name: text(&data, "name").unwrap_or_default(),
                reason: text(&data, "reason").unwrap_or_default(),
            },
            "agent.status_changed" => SwarmEvent::AgentStatusChanged {
                agent_id: agent_id?,
                name: text(&data, "name").unwrap_or_default(),
                status: match data.get("status").and_then(Value::as_str) {
                    Some("busy") => Some(AgentStatus::Busy),
                    Some("idle") => Some(AgentStatus::Idle),
                    _ => None,
                },
            },
            "task.created" => SwarmEvent::TaskCreated {
                task_id: task_id?,
                description: text(&data, "description").unwrap_or_default(),
                retry_of: text(&data, "retry_of"),
            },
            "task.bidding" => SwarmEvent::TaskBidding {
                task_id: task_id?,
                closes_ms: data.get("closes_at").and_then(Value::as_str).and_then(parse_timestamp),
                window_secs: data.get("window_secs").and_then(Value::as_f64),
            },
            "bid.submitted" => SwarmEvent::BidSubmitted {
                task_id: task_id?,
                agent_id: agent_id?,
                bid_sats: data.get("bid_sats").and_then(Value::as_u64)?,
                agent_name: text(&data, "agent").unwrap_or_default(),
            },
            "auction.closed" => SwarmEvent::AuctionClosed {
                task_id: task_id?,
                bids: data.get("bids").and_then(Value::as_u64).unwrap_or_default(),
                winner: text(&data, "winner").zip(data.get("winning_bid").and_then(Value::as_u64)),
            },
            "task.assigned" => SwarmEvent::TaskAssigned {
                task_id: task_id?,
                agent_id: agent_id?,
                bid_sats: data.get("bid_sats").and_then(Value::as_u64),
                agent_name: text(&data, "agent").unwrap_or_default(),
            },
            "task.started" => SwarmEvent::TaskStarted { task_id: task_id?, agent_id },
            "tool.called" | "tool.completed" | "tool.failed" => {
                let status = ToolStatus::parse(&kind["tool.".len()..])?;
                let mut data = data;
                let tool_name = match data.remove("tool_name") {
                    Some(Value::String(name)) => name,
                    _ => String::new(),
                };
                SwarmEvent::Tool { task_id: task_id?, agent_id, status, tool_name, data }
            }
            "task.completed" => {
                SwarmEvent::TaskCompleted { task_id: task_id?, agent_id, result: data.get("result").cloned() }
            }
            "task.failed" => SwarmEvent::TaskFailed {
                task_id: task_id?,
                agent_id,
                reason: text(&data, "reason").unwrap_or_else(|| "unknown".to_owned()),
            },
            "task.cancelled" => SwarmEvent::TaskCancelled {
                task_id: task_id?,
                agent_id,
                reason: text(&data, "reason").unwrap_or_else(|| "unknown".to_owned()),
            },
            _ => return None,
        };
        Some(decoded)
    }

    /// The event as a JSON object for ingest (`event_type`, the ids and `data`;
    /// ingest adds `source`, the id and the time). `data`'s keys are sorted, as
    /// every JSON object the server writes.
    pub(crate) fn to_json(&self) -> Map<String, Value> {
        let (task_id, agent_id, data): (Option<&str>, Option<&str>, Option<Value>) = match self {
            SwarmEvent::AgentJoined { agent_id, name, capabilities } => {
                (None, Some(agent_id), Some(json!({"name": name, "capabilities": capabilities})))
            }
            SwarmEvent::AgentLeft { agent_id, name, reason } => {
                (None, Some(agent_id), Some(json!({"name": name, "reason": reason})))
            }
            SwarmEvent::AgentStatusChanged { agent_id, name, status } => {
                let mut data = Map::new();
                data.insert("name".into(), json!(name));
                if let Some(status) = status {
                    data.insert("status".into(), json!(status));
                }
                (None, Some(agent_id), Some(Value::Object(data)))
            }
            SwarmEvent::TaskCreated { task_id, description, retry_of } => {
                let mut data = Map::new();
                data.insert("description".into(), json!(description));
                if let Some(original) = retry_of {
                    data.insert("retry_of".into(), json!(original));
                }
                (Some(task_id), None, Some(Value::Object(data)))
            }
            SwarmEvent::TaskBidding { task_id, closes_ms, window_secs } => (
                Some(task_id),
                None,
                Some(json!({"closes_at": closes_ms.map(format_timestamp), "window_secs": window_secs})),
            ),
            SwarmEvent::BidSubmitted { task_id, agent_id, bid_sats, agent_name } => {
                (Some(task_id), Some(agent_id), Some(json!({"bid_sats": bid_sats, "agent": agent_name})))
            }
            SwarmEvent::AuctionClosed { task_id, bids, winner } => {
                let data = match winner {
                    Some((agent, sats)) => json!({"bids": bids, "winner": agent, "winning_bid": sats}),
                    None => json!({"bids": bids}),
                };
                (Some(task_id), None, Some(data))
            }
            SwarmEvent::TaskAssigned { task_id, agent_id, bid_sats, agent_name } => {
                (Some(task_id), Some(agent_id), Some(json!({"bid_sats": bid_sats, "agent": agent_name})))
            }
            // A start says nothing beyond who and when.
            SwarmEvent::TaskStarted { task_id, agent_id } => (Some(task_id), agent_id.as_deref(), None),
            SwarmEvent::Tool { task_id, agent_id, tool_name, data, .. } => {
                let mut data = data.clone();
                data.insert("tool_name".into(), json!(tool_name));
                (Some(task_id), agent_id.as_deref(), Some(Value::Object(data)))
            }
            SwarmEvent::TaskCompleted { task_id, agent_id, result } => {
                (Some(task_id), agent_id.as_deref(), Some(json!({"result": result})))
            }
            SwarmEvent::TaskFailed { task_id, agent_id, reason }
            | SwarmEvent::TaskCancelled { task_id, agent_id, reason } => {
                (Some(task_id), agent_id.as_deref(), Some(json!({"reason": reason})))
            }
        };
        let mut out = Map::new();
        out.insert("event_type".into(), json!(self.event_type()));
        if let Some(t) = task_id {
            out.insert("task_id".into(), json!(t));
        }
        if let Some(a) = agent_id {
            out.insert("agent_id".into(), json!(a));
        }
        if let Some(d) = data {
            out.insert("data".into(), d);
        }
        out
    }
}

#[cfg(test)]
impl SwarmEvent {
    /// The event as the log holds it once committed at `seq`, time `ts_ms`, after
    /// ingest took [`SwarmEvent::to_json`].
    pub(crate) fn committed(&self, seq: u64, ts_ms: i64) -> Event {
        let object = self.to_json();
        let data = object.get("data").map_or_else(|| "{}".to_owned(), Value::to_string);
        Event::encode(crate::event::EventParts {
            seq,
            id: &format!("e{seq}"),
            event_type: self.event_type(),
            source: "coordinator",
            task_id: object.get("task_id").and_then(Value::as_str),
            agent_id: object.get("agent_id").and_then(Value::as_str),
            ts_ms,
            data: &data,
        })
        .expect("a swarm event's fields are valid event fields")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;

    fn every_variant() -> Vec<SwarmEvent> {
        let mut tool_data = Map::new();
        tool_data.insert("attempt".into(), json!(1));
        vec![
            SwarmEvent::AgentJoined { agent_id: "a".into(), name: "A".into(), capabilities: vec!["code".into()] },
            SwarmEvent::AgentLeft { agent_id: "a".into(), name: "A".into(), reason: "timeout".into() },
            SwarmEvent::AgentStatusChanged { agent_id: "a".into(), name: "A".into(), status: Some(AgentStatus::Busy) },
            SwarmEvent::TaskCreated { task_id: "t".into(), description: "sort".into(), retry_of: None },
            SwarmEvent::TaskCreated { task_id: "t2".into(), description: "sort".into(), retry_of: Some("t".into()) },
            SwarmEvent::TaskBidding { task_id: "t".into(), closes_ms: Some(60_000), window_secs: Some(15.0) },
            SwarmEvent::BidSubmitted {
                task_id: "t".into(),
                agent_id: "a".into(),
                bid_sats: u64::MAX,
                agent_name: "A".into(),
            },
            SwarmEvent::AuctionClosed { task_id: "t".into(), bids: 2, winner: Some(("a".into(), 30)) },
            SwarmEvent::AuctionClosed { task_id: "t".into(), bids: 0, winner: None },
            SwarmEvent::TaskAssigned {
                task_id: "t".into(),
                agent_id: "a".into(),
                bid_sats: Some(30),
                agent_name: "A".into(),
            },
            SwarmEvent::TaskStarted { task_id: "t".into(), agent_id: Some("a".into()) },
            SwarmEvent::Tool {
                task_id: "t".into(),
                agent_id: Some("a".into()),
                status: ToolStatus::Failed,
                tool_name: "grep".into(),
                data: tool_data,
            },
            SwarmEvent::TaskCompleted {
                task_id: "t".into(),
                agent_id: Some("a".into()),
                result: Some(json!({"n": 1})),
            },
            SwarmEvent::TaskFailed { task_id: "t".into(), agent_id: None, reason: "disk full".into() },
            SwarmEvent::TaskCancelled { task_id: "t".into(), agent_id: Some("a".into()), reason: "wrong repo".into() },
        ]
    }

    #[test]
    fn every_event_reads_back_as_it_was_written() {
        for (i, e) in every_variant().into_iter().enumerate() {
            let back = SwarmEvent::decode(&e.committed(i as u64 + 1, 1_000));
            assert_eq!(back.as_ref(), Some(&e), "{}", e.event_type());
        }
    }

    #[test]
    fn the_stored_data_keeps_its_field_names() {
        let bid =
            SwarmEvent::BidSubmitted { task_id: "t".into(), agent_id: "a".into(), bid_sats: 7, agent_name: "A".into() };
        assert_eq!(bid.to_json()["data"].to_string(), r#"{"agent":"A","bid_sats":7}"#);
        let started = SwarmEvent::TaskStarted { task_id: "t".into(), agent_id: Some("a".into()) };
        assert!(!started.to_json().contains_key("data"), "a start is written without data");
        let done = SwarmEvent::TaskCompleted { task_id: "t".into(), agent_id: None, result: None };
        assert_eq!(done.to_json()["data"].to_string(), r#"{"result":null}"#);
    }

    fn producer(event_type: &str, task: Option<&str>, agent: Option<&str>, data: &str) -> Event {
        Event::encode(EventParts {
            seq: 1,
            id: "e",
            event_type,
            source: "elsewhere",
            task_id: task,
            agent_id: agent,
            ts_ms: 1,
            data,
        })
        .unwrap()
    }

    #[test]
    fn events_the_fold_cannot_use_decode_to_nothing() {
        assert_eq!(SwarmEvent::decode(&producer("bid.submitted", Some("t"), Some("a"), r#"{"bid_sats":-3}"#)), None);
        assert_eq!(SwarmEvent::decode(&producer("bid.submitted", Some("t"), Some("a"), r#"{"bid_sats":"9"}"#)), None);
        assert_eq!(SwarmEvent::decode(&producer("bid.submitted", None, Some("a"), r#"{"bid_sats":9}"#)), None);
        assert_eq!(SwarmEvent::decode(&producer("agent.joined", None, None, "{}")), None);
        assert_eq!(SwarmEvent::decode(&producer("agent.heartbeat", None, Some("a"), "{}")), None);
        assert_eq!(SwarmEvent::decode(&producer("deploy.done", Some("t"), None, "{}")), None);
    }

    #[test]
    fn missing_fields_take_the_folds_defaults() {
        let joined = SwarmEvent::decode(&producer("agent.joined", None, Some("a"), r#"{"capabilities":[1,"x"]}"#));
        assert_eq!(
            joined,
            Some(SwarmEvent::AgentJoined { agent_id: "a".into(), name: "a".into(), capabilities: vec!["x".into()] })
        );
        let failed = SwarmEvent::decode(&producer("task.failed", Some("t"), None, r#"{"reason":5}"#));
        assert_eq!(
            failed,
            Some(SwarmEvent::TaskFailed { task_id: "t".into(), agent_id: None, reason: "unknown".into() })
        );
        let status = SwarmEvent::decode(&producer("agent.status_changed", None, Some("a"), r#"{"status":"asleep"}"#));
        assert_eq!(
            status,
            Some(SwarmEvent::AgentStatusChanged { agent_id: "a".into(), name: String::new(), status: None })
        );
    }
}
