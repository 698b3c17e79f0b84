//! `keygate bench` against the simulated key: a passing run writes JSON, Markdown and JUnit
//! reports; a failing step makes the exit code non-zero and shows up in the JUnit file.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn bench(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args([
            "bench",
            "--simulate",
            "--iterations",
            "10",
            "--touch-timeout-secs",
            "5",
            "--data-dir",
        ])
        .arg(dir)
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra)
        .env_remove("KEYGATE_BENCH_PIN")
        .output()
        .unwrap()
}

#[test]
fn a_passing_run_writes_three_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("PASS sim:1"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("touch the key now"));
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/1-sim-1.json")).unwrap())
            .unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["device"]["model"], "keygate Simulated Key");
    assert_eq!(report["round_trip"]["n"], 10);
    assert!(
        report["round_trip"]["p99_ms"].as_f64().unwrap()
            >= report["round_trip"]["p50_ms"].as_f64().unwrap()
    );
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"counter") && steps.iter().any(|s| s.starts_with("get_assertion")),
        "{steps:?}"
    );
    let md = std::fs::read_to_string(dir.path().join("out/1-sim-1.md")).unwrap();
    assert!(md.contains("| result | **PASS** |"));
    let xml = std::fs::read_to_string(dir.path().join("out/1-sim-1.xml")).unwrap();
    assert!(xml.contains("failures=\"0\""));
}

#[test]
fn a_failing_step_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // The simulated key has no PIN; keygate bench never sets one, so the PIN step fails.
    let out = bench(dir.path(), &["--pin", "9999"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL sim:1"));
    let xml = std::fs::read_to_string(dir.path().join("out/1-sim-1.xml")).unwrap();
    assert!(
        xml.contains("<failure message=\"a PIN was given but the key has none"),
        "{xml}"
    );
}
