//! The attestation policy end to end (`[attestation]`): real HTTP to keygate, the simulated key
//! speaking real CTAP2 with its packed attestation (its test CA made trusted through
//! `ca_files`, or not), Metadata Service BLOBs signed at run time by a throwaway PKI
//! (`keygate::attestation::testing`), `keygate mds update` through the real binary, and the
//! Entra path checked against the fake tenant before anything is posted to Graph.

#[path = "../common/mod.rs"]
mod common;

mod entra;
mod local;
mod mds;

use std::path::{Path, PathBuf};

use common::TestServer;
use keygate::attestation::testing::TestPki;
use keygate::device::sim::SIM_AAGUID;
use serde_json::{json, Value};

const PIN: &str = "1234";

/// A keygate on its own data dir (kept in `_dir`), the simulated key with PIN [`PIN`].
struct Env {
    s: TestServer,
    _dir: tempfile::TempDir,
}

impl Env {
    /// `toml` may name `{sim_ca}`: the simulated keys' test CA of this data dir (made at start).
    async fn start(toml: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        Self::start_in(tmp, toml).await
    }

    async fn start_in(tmp: tempfile::TempDir, toml: &str) -> Env {
        let dir = tmp.path().to_path_buf();
        let toml = toml.replace("{sim_ca}", &sim_ca_path(&dir).display().to_string());
        let s = TestServer::start_in(&dir, &toml).await;
        s.set_pin(PIN).await;
        Env { s, _dir: tmp }
    }

    /// Enroll `user` and wait for the end.
    async fn enroll(&self, user: &str) -> Value {
        self.s
            .enroll(json!({ "user": user, "display_name": "An Peeters", "pin": PIN }))
            .await
    }

    /// The `attestation.finding` lines of `user`'s audit.
    async fn findings(&self, user: &str) -> Vec<Value> {
        let (_, audit) = self.s.get(&format!("/v1/audit?user={user}")).await;
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "attestation.finding")
            .cloned()
            .collect()
    }

    async fn credentials(&self, user: &str) -> Vec<Value> {
        let (_, v) = self.s.get(&format!("/v1/users/{user}/credentials")).await;
        v["credentials"].as_array().cloned().unwrap_or_default()
    }

    async fn self_attest(&self) {
        let key = self.s.sim_key().await;
        self.s
            .configure_key(&key, json!({ "attestation": "self" }))
            .await;
    }
}

fn sim_ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join("sim").join("attestation-ca.pem")
}

/// The simulated keys' test CA of `data_dir`, made now if the dir has none yet (as the daemon
/// would at start, with the test servers' seed).
fn sim_ca_pem(data_dir: &Path) -> String {
    keygate::device::sim::SimBench::open(data_dir, Some(7))
        .unwrap()
        .attestation_ca_pem()
}

/// A failed enrollment's `attestation_rejected` reason.
fn rejected(v: &Value) -> &str {
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "attestation_rejected", "{v}");
    v["error"]["reason"].as_str().unwrap()
}

fn date_in(days: i64) -> time::Date {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days)).date()
}

/// A BLOB from `pki`, serial `no`, current for a month, with the simulated key's model whose
/// attestation root is `sim_ca` and whose newest status is `status`.
fn sim_blob(pki: &TestPki, no: u64, sim_ca: &str, status: &str) -> String {
    use keygate::attestation::testing::{entry, payload};
    pki.sign_blob(&payload(
        no,
        date_in(30),
        vec![entry(
            SIM_AAGUID,
            "Simulated Key (from MDS)",
            &[sim_ca],
            status,
        )],
    ))
}
