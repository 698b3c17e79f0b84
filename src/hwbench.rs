//! `keygate bench`: the bench operator's tool. Runs a scripted suite against each plugged key
//! (real keys over HID, or the simulated ones) and writes a report per key as JSON, Markdown and
//! JUnit XML. Nothing destructive: no PIN is set, no reset; credentials are made for the RP ID
//! `keygate-bench.invalid` (discoverable ones only with `--discoverable`, as they use a slot).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ceremony::client::client_data_json;
use crate::device::{
    Authenticator, DeviceInfo, GetAssertionArgs, MakeCredentialArgs, OpContext, Pin, Progress,
};

pub const BENCH_RP: &str = "keygate-bench.invalid";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Silent round trips (GetInfo) measured for p50/p99.
    pub iterations: usize,
    /// The key's PIN, for the user-verification steps.
    pub pin: Option<String>,
    pub discoverable: bool,
    pub touch_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub ms: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    pub operation: &'static str,
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub device: DeviceInfo,
    pub steps: Vec<Step>,
    pub round_trip: Option<RoundTrip>,
    pub passed: bool,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn ctx(timeout: Duration, prompt: &Arc<dyn Fn(Progress) + Send + Sync>) -> OpContext {
    OpContext::new(Instant::now() + timeout, prompt.clone())
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

/// Run the suite on one key. `say` shows progress (and "touch the key now").
pub fn bench_key(key: &dyn Authenticator, opts: &BenchOptions, say: &dyn Fn(&str)) -> KeyReport {
    let prompt: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(|p| {
        if p == Progress::WaitingTouch {
            eprintln!("  >>> touch the key now <<<");
        }
    });
    let mut r = Runner {
        steps: Vec::new(),
        say,
    };
    let info = r.step("get_info", || {
        let i = key.info().map_err(|e| e.to_string())?;
        let d = format!(
            "{} {:?}",
            i.model.clone().unwrap_or_else(|| i.product.clone()),
            i.versions
        );
        Ok((i, d))
    });
    let Some(info) = info else {
        return KeyReport {
            device: empty_info(key),
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
            let retries = key.pin_retries().map_err(|e| e.to_string())?;
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
        };
        let out = key
            .make_credential(&args, &ctx(opts.touch_timeout, &prompt))
            .map_err(|e| format!("{} ({})", e, e.code()))?;
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
                };
                let out = key
                    .get_assertion(&args, &ctx(opts.touch_timeout, &prompt))
                    .map_err(|e| format!("{} ({})", e, e.code()))?;
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
            };
            key.make_credential(&args, &ctx(opts.touch_timeout, &prompt))
                .map_err(|e| e.to_string())?;
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
            };
            let all = key
                .get_assertion(&args, &ctx(opts.touch_timeout, &prompt))
                .map_err(|e| e.to_string())?;
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
    let mut times = Vec::with_capacity(opts.iterations);
    let rt = r.step(
        &format!("round trip x{} (GetInfo, silent)", opts.iterations),
        || {
            for _ in 0..opts.iterations {
                let t = Instant::now();
                key.info().map_err(|e| e.to_string())?;
                times.push(t.elapsed());
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
        },
    );
    let passed = r.steps.iter().all(|s| s.ok);
    KeyReport {
        device: info,
        steps: r.steps,
        round_trip: rt,
        passed,
    }
}

fn empty_info(key: &dyn Authenticator) -> DeviceInfo {
    DeviceInfo {
        id: key.id(),
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
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn markdown(r: &KeyReport) -> String {
    let d = &r.device;
    let mut s = format!(
        "# keygate bench: {}\n\n| | |\n|---|---|\n| device | `{}` |\n| model | {} |\n| AAGUID | {} |\n| firmware | {} |\n| CTAP | {} |\n| extensions | {} |\n| PIN | {} |\n| UV | {} |\n| discoverable slots left | {} |\n| result | **{}** |\n\n| step | result | ms | detail |\n|---|---|---|---|\n",
        d.model.clone().unwrap_or_else(|| d.product.clone()),
        d.id,
        d.model.clone().unwrap_or_else(|| "unknown".into()),
        d.aaguid.map(|a| a.to_string()).unwrap_or_default(),
        d.firmware.clone().unwrap_or_default(),
        d.versions.join(", "),
        d.extensions.join(", "),
        match d.pin_set {
            Some(true) => format!("set ({} retries)", d.pin_retries.unwrap_or(0)),
            Some(false) => "not set".into(),
            None => "unsupported".into(),
        },
        d.uv_supported,
        d.remaining_discoverable_credentials.map(|n| n.to_string()).unwrap_or_default(),
        if r.passed { "PASS" } else { "FAIL" },
    );
    for st in &r.steps {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            st.name,
            if st.ok { "✔" } else { "✘" },
            st.ms,
            st.detail.replace('|', "/")
        ));
    }
    s
}

pub fn junit(r: &KeyReport) -> String {
    let failures = r.steps.iter().filter(|s| !s.ok).count();
    let total: f64 = r.steps.iter().map(|s| s.ms).sum::<f64>() / 1000.0;
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"keygate bench {}\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n",
        xml(&r.device.id),
        r.steps.len()
    );
    for st in &r.steps {
        s.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            xml(&r.device.id),
            xml(&st.name),
            st.ms / 1000.0
        ));
        if !st.ok {
            s.push_str(&format!("<failure message=\"{}\"/>", xml(&st.detail)));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("</testsuite>\n");
    s
}

/// Write `<out>/<n>-<slug>.{json,md,xml}` for one report.
pub fn write_reports(out: &Path, n: usize, r: &KeyReport) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let slug: String = r
        .device
        .id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let base = out.join(format!("{n}-{slug}"));
    std::fs::write(base.with_extension("json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(base.with_extension("md"), markdown(r))?;
    std::fs::write(base.with_extension("xml"), junit(r))?;
    Ok(())
}
