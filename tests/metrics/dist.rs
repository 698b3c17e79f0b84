//! `dist/grafana-dashboard.json` and `dist/prometheus-alerts.yml` against the metrics keygate
//! exposes: every `keygate_*` name they use is an exposed series, the dashboard shows every
//! family, and the required alerts exist. Where `promtool` is installed (Debian's
//! `prometheus` package; not installed by `scripts/setup`) it also checks the rules, runs their
//! unit tests (`dist/prometheus-alerts.test.yml`) and parses every dashboard query as PromQL.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use keygate::metrics::FAMILY_NAMES;
use serde_json::Value;

const DIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist");

/// Every series name a query may use: the families, and a histogram's three series.
fn exposed() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for family in FAMILY_NAMES {
        names.insert(family.to_string());
        if family.ends_with("_seconds") {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{family}{suffix}"));
            }
        }
    }
    names
}

/// The `keygate_*` names in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("keygate_") {
        let preceded_by_word = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_word {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

fn promtool() -> Option<Command> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "\n*** promtool is not installed (apt-get install prometheus): the PromQL of \
             dist/ was checked for metric names only ***\n"
        );
    }
    found.then(|| Command::new("promtool"))
}

fn run_promtool(mut cmd: Command, args: &[&str]) {
    let out = cmd.args(args).output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn check_dashboard() {
    let text = std::fs::read_to_string(Path::new(DIST).join("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["title"]
        .as_str()
        .is_some_and(|t| t.contains("keygate")));
    assert!(dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "panel ids are unique"
    );
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let exposed = exposed();
    let mut shown = BTreeSet::new();
    for q in &queries {
        let names = metric_names(q);
        assert!(
            !names.is_empty() || q.contains("up{"),
            "{q} shows no metric"
        );
        for n in names {
            assert!(exposed.contains(&n), "{q}: keygate exposes no {n}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
                .unwrap_or(&n)
                .to_string();
            shown.insert(family);
        }
    }
    for family in FAMILY_NAMES {
        assert!(
            shown.contains(*family),
            "the dashboard does not show {family}"
        );
    }
    // Every query parses as PromQL once Grafana's interval variable is given a value.
    if let Some(cmd) = promtool() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, q) in queries.iter().enumerate() {
            let q = q.replace("$__rate_interval", "5m");
            rules.push_str(&format!(
                "      - record: dashboard:query{i}\n        expr: {}\n",
                serde_json::to_string(&q).unwrap()
            ));
        }
        let path = dir.path().join("dashboard-rules.yml");
        std::fs::write(&path, rules).unwrap();
        run_promtool(cmd, &["check", "rules", path.to_str().unwrap()]);
    }
}

pub fn check_alerts() {
    let path = Path::new(DIST).join("prometheus-alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let exposed = exposed();
    let names = metric_names(&text);
    assert!(!names.is_empty());
    for n in names {
        assert!(
            exposed.contains(&n),
            "the alerts use {n}, which keygate does not expose"
        );
    }
    for alert in [
        "KeygateDown",
        "KeygateSmsProviderCircuitOpen",
        "KeygateSmsOutboxGrowing",
        "KeygateLockoutSpike",
        "KeygateCeremonyErrorRatioHigh",
    ] {
        assert!(
            text.contains(&format!("- alert: {alert}\n")),
            "{alert} missing"
        );
    }
    if let Some(cmd) = promtool() {
        run_promtool(cmd, &["check", "rules", path.to_str().unwrap()]);
        let tests = Path::new(DIST).join("prometheus-alerts.test.yml");
        run_promtool(
            Command::new("promtool"),
            &["test", "rules", tests.to_str().unwrap()],
        );
    }
}
