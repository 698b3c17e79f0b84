//! schemathesis (the external OpenAPI fuzzer) against the real binary under `--simulate`,
//! with every check (`--checks all`): the served /openapi.json must describe every answer
//! (status, content type, headers, body schema), requests the document calls invalid must be
//! refused, and requests it calls valid must not be (tests/schemathesis.toml lists the
//! statuses that refuse a valid request for what it means, e.g. 422 `invalid_phone_number`).
//!
//! Bounded: a fixed seed and a few examples per operation (well under two minutes on two
//! cores). Nothing is excluded: the simulator routes only touch simulated keys, and the
//! admin routes act on users schemathesis makes up, in a throw-away data dir.
//!
//! schemathesis is installed by `scripts/setup --test` (PyPI, `schemathesis>=4,<5`). Where it
//! is missing this test fails, unless `KEYGATE_SKIP_SCHEMATHESIS=1` says to skip it.

use std::path::Path;
use std::process::{Command, Stdio};

use keygate::harness::Spawned;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// Examples per operation and phase, and the seed, for a reproducible run.
const MAX_EXAMPLES: &str = "30";
const SEED: &str = "20240611";

fn admin_token(dir: &Path) -> String {
    keygate::harness::cli_token(BIN, dir, "admin", &[])
}

/// The schemathesis command: `schemathesis` on PATH, else `python3 -m schemathesis.cli` (pip
/// may install its script outside PATH); None where neither answers `--version`.
fn schemathesis() -> Option<Command> {
    let candidates: [(&str, &[&str]); 2] = [
        ("schemathesis", &[]),
        ("python3", &["-m", "schemathesis.cli"]),
    ];
    candidates.into_iter().find_map(|(program, args)| {
        let works = Command::new(program)
            .args(args)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        works.then(|| {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        })
    })
}

#[test]
fn schemathesis_finds_nothing() {
    let Some(mut schemathesis) = schemathesis() else {
        if std::env::var("KEYGATE_SKIP_SCHEMATHESIS").as_deref() == Ok("1") {
            eprintln!("SKIPPED: schemathesis is not installed and KEYGATE_SKIP_SCHEMATHESIS=1");
            return;
        }
        panic!(
            "schemathesis is not installed: run `scripts/setup --test` (or \
             `python3 -m pip install 'schemathesis>=4,<5'`), or set KEYGATE_SKIP_SCHEMATHESIS=1 \
             to skip this test"
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let token = admin_token(tmp.path());
    let daemon = Spawned::spawn(&mut Spawned::command(BIN, tmp.path()));
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let out = schemathesis
        .args(["--config-file", config, "run"])
        .arg(format!("{}/openapi.json", daemon.base))
        .args([
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
        ])
        .args(["--request-timeout", "60", "--no-color"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        // Its reports go to the temporary directory, not into the source tree.
        .current_dir(tmp.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('='))
        .unwrap_or("(no summary line)");
    println!("schemathesis: {summary}");
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !summary.contains("failure") && !summary.contains("error"),
        "schemathesis reported problems:\n{stdout}"
    );
    drop(daemon);
}
