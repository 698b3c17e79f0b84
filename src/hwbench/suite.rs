//! The bench suite itself: [`bench_key`] runs each step (GetInfo, PIN, make_credential,
//! get_assertion twice with signature and counter checks, the discoverable pair, silent round
//! trips) through the key's actor, timing it and recording its outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{BenchOptions, KeyReport, RoundTrip, Step, BENCH_RP};
use crate::ceremony::client::client_data_json;
use crate::device::actor::DeviceActor;
use crate::device::capture::CaptureSink;
use crate::device::{
    Authenticator, DeviceError, DeviceInfo, GetAssertionArgs, MakeCredentialArgs, OpContext, Pin,
    Progress,
};

/// Deadline of a step that needs no touch (GetInfo, PIN retries): a key that does not answer
/// within it has hung.
const SILENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra deadline per measured round trip, on top of [`SILENT_TIMEOUT`] (real keys answer
/// GetInfo + getPinRetries in well under 100 ms).
const ROUND_TRIP_BUDGET: Duration = Duration::from_millis(500);

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
/// One key behind its actor, driven from synchronous code.
struct OnKey<'a> {
    actor: &'a DeviceActor,
    rt: tokio::runtime::Runtime,
    prompt: Arc<dyn Fn(Progress) + Send + Sync>,
    capture: Option<Arc<CaptureSink>>,
}

impl OnKey<'_> {
    /// Run `op` on the key's thread; at `timeout` the actor cancels it and the step gets
    /// `TouchTimeout`, whatever the authenticator does about deadlines itself.
    fn run<T, F>(&self, timeout: Duration, op: F) -> Result<T, DeviceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Authenticator, &OpContext) -> Result<T, DeviceError> + Send + 'static,
    {
        let ctx = OpContext::new(Instant::now() + timeout, self.prompt.clone());
        self.rt.block_on(self.actor.run(ctx, op))
    }

    fn record_client_data(&self, cdj: &[u8]) {
        if let Some(sink) = &self.capture {
            sink.record_client_data(self.actor.id(), cdj);
        }
    }
}

fn failed(e: DeviceError) -> String {
    format!("{} ({})", e, e.code())
}

fn challenge() -> Vec<u8> {
    let mut c = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut c);
    c
}

fn sign_count(auth_data: &[u8]) -> Option<u32> {
    auth_data
        .get(33..37)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The credential public key from attested authData, checked against an assertion signature.
fn verify_assertion(
    attested_auth_data: &[u8],
    auth_data: &[u8],
    cdj: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier;
    if attested_auth_data.len() < 55 {
        return Err("attested authData is truncated".into());
    }
    let id_len = u16::from_be_bytes([attested_auth_data[53], attested_auth_data[54]]) as usize;
    let cose = attested_auth_data
        .get(55 + id_len..)
        .ok_or("attested authData is truncated")?;
    let key = crate::device::ctap2::decode(cose)
        .and_then(|v| crate::device::ctap2::parse_cose_ec2(&v))
        .map_err(|e| e.to_string())?;
    let vk = p256::ecdsa::VerifyingKey::from(&key);
    let sig = p256::ecdsa::DerSignature::try_from(sig).map_err(|e| e.to_string())?;
    let mut msg = auth_data.to_vec();
    msg.extend(Sha256::digest(cdj));
    vk.verify(&msg, &sig)
        .map_err(|_| "signature does not verify".to_string())
}

struct Runner<'a> {
    steps: Vec<Step>,
    say: &'a dyn Fn(&str),
}

impl Runner<'_> {
    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(T, String), String>,
    ) -> Option<T> {
        (self.say)(&format!("  … {name}"));
        let t = Instant::now();
        let r = f();
        let elapsed = ms(t.elapsed());
        let (ok, detail, out) = match r {
            Ok((v, d)) => (true, d, Some(v)),
            Err(e) => (false, e, None),
        };
        (self.say)(&format!(
            "  {} {name} ({elapsed} ms) {detail}",
            if ok { "✔" } else { "✘" }
        ));
        self.steps.push(Step {
            name: name.into(),
            ok,
            ms: elapsed,
            detail,
        });
        out
    }
}

/// Run the suite on one key, each step through the key's actor. `say` shows progress (and
/// "touch the key now"). Blocks; must not be called from async code (it runs its own runtime).
pub fn bench_key(key: &DeviceActor, opts: &BenchOptions, say: &dyn Fn(&str)) -> KeyReport {
    let prompt: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(|p| {
        if p == Progress::WaitingTouch {
            eprintln!("  >>> touch the key now <<<");
        }
    });
    let mut r = Runner {
        steps: Vec::new(),
        say,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            r.steps.push(Step {
                name: "start".into(),
                ok: false,
                ms: 0.0,
                detail: format!("cannot start the bench's runtime: {e}"),
            });
            return KeyReport {
                device: empty_info(key.id()),
                steps: r.steps,
                round_trip: None,
                passed: false,
            };
        }
    };
    let key = OnKey {
        actor: key,
        rt,
        prompt,
        capture: opts.capture.clone(),
    };
    let info = r.step("get_info", || {
        let i = key.run(SILENT_TIMEOUT, |a, _| a.info()).map_err(failed)?;
        let d = format!(
            "{} {:?}",
            i.model.clone().unwrap_or_else(|| i.product.clone()),
            i.versions
        );
        Ok((i, d))
    });
    let Some(info) = info else {
        return KeyReport {
            device: empty_info(key.actor.id()),
            steps: r.steps,
            round_trip: None,
            passed: false,
        };
    };
    let pin = opts.pin.as_ref().map(|p| Pin::new(p.clone()));
    let uv = pin.is_some();
    if let Some(p) = &pin {
        r.step("pin_accepted", || {
            if info.pin_set != Some(true) {
                return Err(
                    "a PIN was given but the key has none (keygate bench never sets one)".into(),
                );
            }
            let retries = key
                .run(SILENT_TIMEOUT, |a, _| a.pin_retries())
                .map_err(failed)?;
            p.check_policy(info.min_pin_length.unwrap_or(4))
                .map_err(|e| e.to_string())?;
            Ok(((), format!("{retries} retries left")))
        });
    }
    let user_id = challenge()[..16].to_vec();
    let cdj = client_data_json(
        "webauthn.create",
        &challenge(),
        &format!("https://{BENCH_RP}"),
    );
    let made = r.step("make_credential (touch)", || {
        let args = MakeCredentialArgs {
            client_data_hash: Sha256::digest(&cdj).into(),
            client_data_json: cdj.clone(),
            rp_id: BENCH_RP.into(),
            rp_name: "keygate bench".into(),
            user_id: user_id.clone(),
            user_name: "bench".into(),
            user_display_name: "keygate bench".into(),
            algorithms: vec![-7],
            exclude_list: vec![],
            resident_key: false,
            user_verification: uv,
            pin: pin.clone(),
            extensions: Default::default(),
        };
        key.record_client_data(&cdj);
        let out = key
            .run(opts.touch_timeout, move |a, ctx| {
                a.make_credential(&args, ctx)
            })
            .map_err(failed)?;
        let ad = crate::ceremony::client::attestation_auth_data(&out.attestation_object)
            .ok_or("no authData")?;
        let fmt = crate::device::ctap2::decode(&out.attestation_object)
            .ok()
            .and_then(|v| {
                crate::device::ctap2::get_text_key(&v, "fmt")
                    .and_then(|f| f.as_text().map(str::to_string))
            })
            .unwrap_or_default();
        Ok(((out.credential_id, ad), format!("attestation `{fmt}`")))
    });
    if let Some((cred_id, attested)) = made {
        let mut counters = Vec::new();
        for i in 1..=2 {
            let cdj =
                client_data_json("webauthn.get", &challenge(), &format!("https://{BENCH_RP}"));
            let got = r.step(&format!("get_assertion #{i} (touch)"), || {
                let args = GetAssertionArgs {
                    client_data_hash: Sha256::digest(&cdj).into(),
                    client_data_json: cdj.clone(),
                    rp_id: BENCH_RP.into(),
                    allow_list: vec![cred_id.clone()],
                    user_verification: uv,
                    pin: pin.clone(),
                    user_presence: true,
                };
                key.record_client_data(&cdj);
                let out = key
                    .run(opts.touch_timeout, move |a, ctx| {
                        a.get_assertion(&args, ctx)
                    })
                    .map_err(failed)?;
                let a = out.into_iter().next().ok_or("no assertion")?;
                verify_assertion(&attested, &a.authenticator_data, &cdj, &a.signature)?;
                let count = sign_count(&a.authenticator_data).unwrap_or(0);
                let uv_flag = a.authenticator_data.get(32).is_some_and(|f| f & 0x04 != 0);
                Ok((
                    count,
                    format!("signature verified, counter {count}, uv {uv_flag}"),
                ))
            });
            counters.extend(got);
        }
        if counters.len() == 2 {
            r.step("counter", || {
                let (a, b) = (counters[0], counters[1]);
                if b > a || (a == 0 && b == 0) {
                    Ok((
                        (),
                        if a == 0 && b == 0 {
                            "always 0 (accepted)".into()
                        } else {
                            format!("{a} -> {b}")
                        },
                    ))
                } else {
                    Err(format!("counter did not increase: {a} -> {b}"))
                }
            });
        }
    }
    if opts.discoverable && uv && info.discoverable_supported {
        let cdj = client_data_json(
            "webauthn.create",
            &challenge(),
            &format!("https://{BENCH_RP}"),
        );
        let rk_user = challenge()[..16].to_vec();
        r.step("discoverable make_credential (touch)", || {
            let args = MakeCredentialArgs {
                client_data_hash: Sha256::digest(&cdj).into(),
                client_data_json: cdj.clone(),
                rp_id: BENCH_RP.into(),
                rp_name: "keygate bench".into(),
                user_id: rk_user.clone(),
                user_name: "bench-rk".into(),
                user_display_name: "keygate bench".into(),
                algorithms: vec![-7],
                exclude_list: vec![],
                resident_key: true,
                user_verification: true,
                pin: pin.clone(),
                extensions: Default::default(),
            };
            key.record_client_data(&cdj);
            key.run(opts.touch_timeout, move |a, ctx| {
                a.make_credential(&args, ctx)
            })
            .map_err(failed)?;
            Ok(((), "stored on the key".into()))
        });
        let cdj = client_data_json("webauthn.get", &challenge(), &format!("https://{BENCH_RP}"));
        r.step("user-less get_assertion (touch)", || {
            let args = GetAssertionArgs {
                client_data_hash: Sha256::digest(&cdj).into(),
                client_data_json: cdj.clone(),
                rp_id: BENCH_RP.into(),
                allow_list: vec![],
                user_verification: true,
                pin: pin.clone(),
                user_presence: true,
            };
            key.record_client_data(&cdj);
            let all = key
                .run(opts.touch_timeout, move |a, ctx| {
                    a.get_assertion(&args, ctx)
                })
                .map_err(failed)?;
            if all
                .iter()
                .any(|a| a.user_handle.as_deref() == Some(&rk_user[..]))
            {
                Ok(((), format!("{} account(s); ours found", all.len())))
            } else {
                Err("the discoverable credential was not returned".into())
            }
        });
    }
    let n = opts.iterations;
    let rt = r.step(&format!("round trip x{n} (GetInfo, silent)"), || {
        // One actor operation for the whole series, timed on the key's thread: the hop to the
        // actor is not part of a CTAP round trip.
        let budget = SILENT_TIMEOUT + ROUND_TRIP_BUDGET.saturating_mul(n as u32);
        let mut times = key
            .run(budget, move |a, ctx| {
                let mut times = Vec::with_capacity(n);
                for _ in 0..n {
                    if ctx.is_cancelled() {
                        return Err(DeviceError::Cancelled);
                    }
                    let t = Instant::now();
                    a.info()?;
                    times.push(t.elapsed());
                }
                Ok(times)
            })
            .map_err(failed)?;
        if times.is_empty() {
            return Err("no round trip measured".into());
        }
        times.sort();
        let p = |q: f64| ms(times[((times.len() as f64 - 1.0) * q).round() as usize]);
        let rt = RoundTrip {
            operation: "GetInfo+getPinRetries",
            n: times.len(),
            p50_ms: p(0.5),
            p99_ms: p(0.99),
        };
        let d = format!("p50 {} ms, p99 {} ms", rt.p50_ms, rt.p99_ms);
        Ok((rt, d))
    });
    let passed = r.steps.iter().all(|s| s.ok);
    KeyReport {
        device: info,
        steps: r.steps,
        round_trip: rt,
        passed,
    }
}

pub(super) fn empty_info(id: &str) -> DeviceInfo {
    DeviceInfo {
        id: id.to_string(),
        transport: String::new(),
        product: String::new(),
        aaguid: None,
        model: None,
        versions: vec![],
        extensions: vec![],
        pin_set: None,
        pin_retries: None,
        uv_supported: false,
        discoverable_supported: false,
        remaining_discoverable_credentials: None,
        firmware: None,
        min_pin_length: None,
        force_pin_change: None,
        pin_policy_writable: false,
        max_credentials_in_list: None,
    }
}
