//! `faultline status` as text: every live op with its situation, every pool
//! with its holders and waiters, every agent with its link and runs.
//!
//! Reads the supervisor's snapshot as JSON and renders what it finds; a
//! field it does not know is skipped rather than fatal, so an older CLI
//! still shows a newer supervisor's overview.

use serde_json::Value;

use super::job::human_ms;

/// Nanoseconds in a field that holds an instant (the snapshot's `Instant`s
/// are nanoseconds on the supervisor's clock).
fn nanos(value: &Value, field: &str) -> Option<u64> {
    value.get(field).and_then(Value::as_u64)
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("-")
}

fn items<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value
        .get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// How long before `at` the instant in `field` was, as `12.3s`.
fn age(value: &Value, field: &str, at: u64) -> String {
    nanos(value, field).map_or_else(
        || "?".to_owned(),
        |since| human_ms(at.saturating_sub(since) / 1_000_000),
    )
}

/// The whole overview as text.
pub fn render(overview: &Value) -> String {
    let at = nanos(overview, "at").unwrap_or(0);
    let mut out = String::new();
    if overview.get("shutting_down").and_then(Value::as_bool) == Some(true) {
        out.push_str("supervisor is shutting down\n");
    }
    if let Some(until) = nanos(overview, "recovering_until").filter(|until| *until > at) {
        out.push_str(&format!(
            "recovering: running jobs wait {} more for their agents\n",
            human_ms((until - at) / 1_000_000)
        ));
    }
    render_ops(overview, at, &mut out);
    render_pools(overview, at, &mut out);
    render_agents(overview, at, &mut out);
    out
}

fn render_ops(overview: &Value, at: u64, out: &mut String) {
    let ops = items(overview, "ops");
    out.push_str(&format!("OPS ({} live)\n", ops.len()));
    if ops.is_empty() {
        out.push_str("  none\n");
        return;
    }
    out.push_str(&format!(
        "  {:<6} {:<8} {:<18} {:<10} {:>8}  {}\n",
        "OP", "JOB", "PHASE", "AGENT", "FOR", "SITUATION"
    ));
    for op in ops {
        let id = op
            .get("id")
            .map_or_else(|| "?".to_owned(), Value::to_string);
        out.push_str(&format!(
            "  {:<6} {:<8} {:<18} {:<10} {:>8}  {}\n",
            id,
            text(op, "job"),
            text(op, "phase"),
            text(op, "agent"),
            age(op, "since", at),
            text(op, "situation")
        ));
    }
}

fn render_entries(label: &str, entries: &[Value], at: u64, out: &mut String) {
    if entries.is_empty() {
        return;
    }
    let shown: Vec<String> = entries
        .iter()
        .map(|entry| {
            let who = entry
                .get("holder")
                .map_or("?", |holder| text(holder, "label"));
            format!("{who} ({})", age(entry, "since", at))
        })
        .collect();
    out.push_str(&format!("      {label:<8} {}\n", shown.join(", ")));
}

fn render_pools(overview: &Value, at: u64, out: &mut String) {
    let pools = items(overview, "pools");
    out.push_str(&format!("POOLS ({})\n", pools.len()));
    for pool in pools {
        let count = |field: &str| pool.get(field).and_then(Value::as_u64).unwrap_or(0);
        let holders = items(pool, "holders");
        let waiters = items(pool, "waiters");
        out.push_str(&format!(
            "  {:<20} {}/{} held, {} free, {} waiting\n",
            text(pool, "name"),
            count("held"),
            count("capacity"),
            count("free"),
            waiters.len()
        ));
        render_entries("holders", holders, at, out);
        render_entries("waiters", waiters, at, out);
    }
}

fn render_agents(overview: &Value, at: u64, out: &mut String) {
    let agents = items(overview, "agents");
    out.push_str(&format!("AGENTS ({})\n", agents.len()));
    for agent in agents {
        let kinds: Vec<&str> = items(agent, "kinds")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let slots = agent.get("slots").and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "  {:<12} {} for {}, heard {} ago, {} slot(s) for {}\n",
            text(agent, "id"),
            text(agent, "link"),
            age(agent, "link_since", at),
            age(agent, "last_heard", at),
            slots,
            kinds.join(", ")
        ));
        let runs: Vec<String> = items(agent, "runs")
            .iter()
            .map(|run| {
                let number = run
                    .get("run")
                    .map_or_else(|| "?".to_owned(), Value::to_string);
                format!("{}#{number} {}", text(run, "job"), text(run, "phase"))
            })
            .collect();
        if !runs.is_empty() {
            out.push_str(&format!("      runs     {}\n", runs.join(", ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_ops_pools_and_agents_relative_to_the_snapshot() {
        let second = 1_000_000_000u64;
        let overview = serde_json::json!({
            "at": 100 * second,
            "recovering_until": null,
            "shutting_down": false,
            "jobs": [],
            "ops": [{
                "id": 7, "job": "j-3", "run": null, "agent": null,
                "phase": "waiting_for_slots", "since": 88 * second,
                "situation": "waiting for a parallel slot, 2 ahead"
            }],
            "pools": [{
                "name": "kind/parallel", "capacity": 2, "held": 2, "free": 0,
                "holders": [
                    {"id": 1, "holder": {"job": "j-1", "op": 5, "label": "j-1#1"}, "since": 90 * second, "granted": true}
                ],
                "waiters": [
                    {"id": 4, "holder": {"job": "j-3", "op": 7, "label": "j-3#0"}, "since": 88 * second, "granted": false}
                ]
            }],
            "agents": [{
                "id": "a-1", "session": 2, "link": "connected",
                "link_since": 40 * second, "last_heard": 99 * second,
                "kinds": ["sequential", "parallel"], "slots": 4,
                "runs": [{"job": "j-1", "run": 1, "phase": "started"}]
            }]
        });
        let text = render(&overview);
        for expected in [
            "OPS (1 live)",
            "waiting_for_slots",
            "12s  waiting for a parallel slot, 2 ahead",
            "kind/parallel        2/2 held, 0 free, 1 waiting",
            "holders  j-1#1 (10s)",
            "waiters  j-3#0 (12s)",
            "a-1          connected for 1m00s, heard 1.0s ago, 4 slot(s) for sequential, parallel",
            "runs     j-1#1 started",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn an_unexpected_shape_renders_without_failing() {
        let text = render(&serde_json::json!({"something": "else"}));
        assert!(text.contains("OPS (0 live)"));
        assert!(text.contains("AGENTS (0)"));
    }
}
