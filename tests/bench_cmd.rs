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

#[test]
fn an_untouched_key_times_out_at_the_touch_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args([
            "bench",
            "--simulate",
            "--iterations",
            "3",
            "--touch-timeout-secs",
            "2",
            "--sim-key",
            r#"{"touch":"never"}"#,
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("out"))
        .env_remove("KEYGATE_BENCH_PIN")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL sim:1"));
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/1-sim-1.json")).unwrap())
            .unwrap();
    assert_eq!(report["passed"], false);
    let steps = report["steps"].as_array().unwrap();
    let mc = steps
        .iter()
        .find(|s| s["name"] == "make_credential (touch)")
        .expect("the make_credential step ran");
    assert_eq!(mc["ok"], false);
    assert!(
        mc["detail"].as_str().unwrap().contains("(touch_timeout)"),
        "{mc}"
    );
    let ms = mc["ms"].as_f64().unwrap();
    assert!(
        (2000.0..5000.0).contains(&ms),
        "the step ends at its 2 s deadline, not before and not much after: {ms} ms"
    );
    assert!(
        !steps
            .iter()
            .any(|s| s["name"].as_str().unwrap().starts_with("get_assertion")),
        "nothing to assert with: {steps:?}"
    );
    assert_eq!(
        report["round_trip"]["n"], 3,
        "the key answers again after the timeout"
    );
    assert!(elapsed < std::time::Duration::from_secs(20), "{elapsed:?}");
}

#[test]
fn sim_key_needs_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["bench", "--sim-key", r#"{"touch":"never"}"#, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs --simulate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
