//! Test fixtures shared by the unit tests that need a simulated key: a bench with one key whose
//! touch is immediate, and operation arguments.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{SimBench, SimKeyOptions, Touch};
use crate::device::{
    Authenticator, DeviceSource, GetAssertionArgs, MakeCredentialArgs, OpContext, Pin,
};

pub(crate) fn ctx() -> OpContext {
    OpContext::new(Instant::now() + Duration::from_secs(5), Arc::new(|_| {}))
}

pub(crate) fn bench(seed: Option<u64>) -> (tempfile::TempDir, SimBench, Arc<dyn Authenticator>) {
    let dir = tempfile::tempdir().unwrap();
    let (b, a) = open_bench(dir.path(), seed);
    (dir, b, a)
}

/// The bench of `data_dir` (its keys as they were left), the first key's touch made immediate.
pub(crate) fn open_bench(
    data_dir: &std::path::Path,
    seed: Option<u64>,
) -> (SimBench, Arc<dyn Authenticator>) {
    let b = SimBench::open(data_dir, seed).unwrap();
    b.configure(
        "sim:1",
        SimKeyOptions {
            touch: Some(Touch::AutoAfterMs(0)),
            ..Default::default()
        },
    )
    .unwrap();
    let a = b.enumerate().unwrap().remove(0);
    (b, a)
}

pub(crate) fn mc_args(rk: bool, pin: Option<&str>) -> MakeCredentialArgs {
    MakeCredentialArgs {
        client_data_hash: [7; 32],
        client_data_json: vec![],
        rp_id: "keygate.local".into(),
        rp_name: "keygate".into(),
        user_id: vec![1, 2, 3],
        user_name: "r1".into(),
        user_display_name: "R One".into(),
        algorithms: vec![-7],
        exclude_list: vec![],
        resident_key: rk,
        user_verification: pin.is_some(),
        pin: pin.map(Pin::new),
        extensions: Default::default(),
    }
}

pub(crate) fn ga_args(allow: Vec<Vec<u8>>, pin: Option<&str>) -> GetAssertionArgs {
    GetAssertionArgs {
        client_data_hash: [9; 32],
        client_data_json: vec![],
        rp_id: "keygate.local".into(),
        allow_list: allow,
        user_verification: pin.is_some(),
        pin: pin.map(Pin::new),
        user_presence: true,
    }
}
