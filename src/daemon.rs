//! Wiring: from a [`Config`] to a running daemon (store, devices, relying party, HTTP).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::ceremony::rp::RelyingParty;
use crate::ceremony::CeremonyService;
use crate::config::Config;
use crate::device::actor::{DeviceManager, DeviceStatus};
use crate::device::hid::HidSource;
use crate::device::sim::SimBench;
use crate::device::DeviceSource;
use crate::http::{router, AppState, SharedState};
use crate::store::Store;

/// Logs go to stderr; coloured only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (no-color.org), so a file or the journal gets plain text.
pub fn init_tracing(cfg: &Config) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cfg.log.level.clone()));
    // The PostgreSQL driver logs statements with their parameters (numbers, code hashes) at
    // debug: never below info, whatever the filter asks.
    let filter = filter.add_directive(
        "tokio_postgres=info"
            .parse()
            .expect("a static directive parses"),
    );
    let colour = log_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Whether log lines get ANSI colour: on a terminal, unless `NO_COLOR` is set to anything.
fn log_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Create the data dir (0700) if needed.
pub fn ensure_data_dir(cfg: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("securing data dir {}", cfg.data_dir.display()))?;
    }
    Ok(())
}

pub fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    open_store_with_clock(cfg, Arc::new(crate::base::clock::SystemClock))
}

/// [`open_store`] with the clock every timestamp the store writes comes from.
pub fn open_store_with_clock(
    cfg: &Config,
    clock: Arc<dyn crate::base::clock::Clock>,
) -> anyhow::Result<Store> {
    ensure_data_dir(cfg)?;
    let path = cfg.data_dir.join("keygate.db");
    let Some(url) = cfg.store.postgres_url() else {
        return Store::open_with_clock(&path, clock)
            .with_context(|| format!("opening database {}", path.display()));
    };
    let timeout = std::time::Duration::from_millis(cfg.store.timeout_ms);
    let target = crate::store::db::PgTarget::parse(url, timeout)
        .map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
    let shown = crate::config::redact_url_password(url);
    let head_key = crate::store::audit_chain::head_key_path(&path);
    let store = Store::open_postgres(Arc::new(target), &head_key, clock)
        .with_context(|| format!("opening the campus store {shown}"))?;
    // The keys that make shared rows readable must be the campus's (see store/campus.rs).
    crate::sms::code::CodeKeys::load_or_create(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("SMS key: {e}"))?;
    for name in ["sms.key", "audit-head.key"] {
        let file = cfg.data_dir.join(name);
        let key = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        store.check_campus_key(name, &key)?;
    }
    Ok(store)
}

/// `keygate audit verify`: the chain of the configured store (the SQLite file in the data dir,
/// or the campus store), with the head key in the data dir when readable (else a note).
pub fn verify_audit(
    cfg: &Config,
    head: Option<&crate::store::GivenHead>,
) -> anyhow::Result<Result<crate::store::AuditVerdict, crate::store::StoreError>> {
    let db = cfg.data_dir.join("keygate.db");
    let key_path = crate::store::audit_chain::head_key_path(&db);
    let key = crate::store::audit_chain::HeadKey::read(&key_path)
        .inspect_err(|e| eprintln!("note: head key {}: {e}", key_path.display()))
        .ok();
    Ok(match cfg.store.postgres_url() {
        None => crate::store::verify_audit_chain(&db, key.as_ref(), head),
        Some(url) => {
            let timeout = std::time::Duration::from_millis(cfg.store.timeout_ms);
            let target = crate::store::db::PgTarget::parse(url, timeout)
                .map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
            crate::store::verify_campus_audit_chain(Arc::new(target), key.as_ref(), head)
        }
    })
}

/// `keygate store migrate --to URL`: the SQLite store `cfg` names, copied into the empty
/// campus store at `to` and checked (see `Store::copy_into`).
pub fn migrate_store(cfg: &Config, to: String) -> anyhow::Result<crate::store::CopyReport> {
    if cfg.store.postgres_url().is_some() {
        anyhow::bail!(
            "the configuration already names a campus store: migrate with the kiosk's SQLite \
             configuration (no [store] url)"
        );
    }
    let mut campus = cfg.clone();
    campus.store.url = Some(to);
    campus
        .store
        .check()
        .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let source = open_store(cfg)?;
    let target = open_store(&campus)?;
    Ok(source.copy_into(&target)?)
}

/// How long rows stay in the hot tables before the store's sweep moves them to history.
fn hot_windows(cfg: &Config) -> crate::store::HotWindows {
    let defaults = crate::store::HotWindows::default();
    let secs = std::time::Duration::from_secs;
    crate::store::HotWindows {
        challenges: defaults.challenges.max(secs(cfg.sms.code_ttl_secs)),
        // The per-number window, and the hour of the global and per-country budgets (rebuilt
        // from the send log at start-up).
        sends: defaults.sends.max(secs(cfg.sms.per_number_window_secs)),
        ceremonies: defaults.ceremonies.max(secs(cfg.ceremony.retention_secs)),
    }
}

/// Build the application state (no socket yet).
pub fn build_state(cfg: Config) -> anyhow::Result<SharedState> {
    build_state_with_clock(cfg, Arc::new(crate::sms::SystemClock))
}

/// [`build_state`] with the SMS layer's clock given (tests drive expiry and lockouts with a
/// manual clock). Starts the SMS outbox worker when called inside a tokio runtime.
pub fn build_state_with_clock(
    cfg: Config,
    clock: Arc<dyn crate::sms::Clock>,
) -> anyhow::Result<SharedState> {
    let store = open_store_with_clock(&cfg, clock.clone())?;
    let interrupted = store.fail_interrupted_ceremonies()?;
    if interrupted > 0 {
        tracing::warn!(
            count = interrupted,
            "ceremonies interrupted by the previous shutdown were ended as failed"
        );
    }
    let _ = store.prune_ceremonies(store.now() - time::Duration::days(30))?;

    let mut ca_pems = Vec::new();
    for f in &cfg.relying_party.attestation_ca_files {
        ca_pems.push(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading attestation CA {}", f.display()))?,
        );
    }
    let KeySources { sources, sim } = key_sources(&cfg)?;
    if let Some(bench) = &sim {
        ca_pems.push(bench.attestation_ca_pem());
    }
    let rp = RelyingParty::new(
        &cfg.relying_party.id,
        &cfg.relying_party.name,
        &cfg.relying_party.origin,
        &ca_pems,
        cfg.relying_party.require_trusted_attestation,
    )
    .map_err(|e| anyhow::anyhow!("relying party: {e}"))?;
    let attestation = crate::attestation::AttestationPolicy::from_config(&cfg, clock.clone())
        .map_err(|e| anyhow::anyhow!("attestation: {e}"))?;
    tracing::info!("{}", attestation.summary());
    let devices = Arc::new(DeviceManager::new(sources));
    let metrics = crate::metrics::Metrics::new();
    let entra = match &cfg.entra {
        Some(e) => Some(
            crate::entra::EntraClient::new(e, clock.clone())
                .map_err(|e| anyhow::anyhow!("entra: {e}"))?
                .with_metrics(metrics.clone()),
        ),
        None => None,
    };
    let ceremonies = Arc::new(
        CeremonyService::new(cfg.clone(), rp, store.clone(), devices, clock.clone())
            .with_entra(entra.clone())
            .with_metrics(metrics.clone())
            .with_attestation(Arc::new(attestation)),
    );
    let hooks_clock = clock.clone();
    let sms = crate::sms::SmsService::with_entra(
        cfg.clone(),
        store.clone(),
        clock,
        entra.clone(),
        metrics.clone(),
    )
    .map_err(|e| anyhow::anyhow!("SMS: {e}"))?;
    if tokio::runtime::Handle::try_current().is_ok() {
        if !cfg.hooks.is_empty() {
            crate::hooks::HookWorker::new(cfg.hooks.clone(), store.clone(), hooks_clock)?
                .spawn()?;
        }
        sms.spawn_worker();
        sms.resume_entra_syncs();
        store.spawn_sweeper(hot_windows(&cfg));
        store.spawn_daily_purge((&cfg.retention).into());
    }
    Ok(Arc::new(AppState {
        cfg,
        store,
        ceremonies,
        sim,
        sms: Some(sms),
        entra,
        metrics,
    }))
}

/// The start of the line `serve` prints on stdout once it accepts connections, followed by the
/// base URL (`http://127.0.0.1:PORT`): scripts and tests that listen on port 0 wait for it.
pub const READY_LINE_PREFIX: &str = "keygate listening on ";

/// Run until SIGINT/SIGTERM.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let listen = cfg.listen;
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "listening beyond loopback as configured");
    }
    let simulate = cfg.simulate;
    let state = build_state(cfg)?;
    crate::base::allocator::spawn_purger().context("starting the allocator's purger")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, simulate, ready_ms = started.elapsed().as_millis() as u64, "keygate ready");
    // One machine-readable line on stdout for scripts and tests that listen on port 0.
    println!("{READY_LINE_PREFIX}http://{addr}");
    notify_systemd("READY=1");
    serve_http(listener, state, shutdown_signal()).await?;
    notify_systemd("STOPPING=1");
    Ok(())
}

/// The one place keygate's HTTP server runs, until `shutdown` resolves: the daemon and the
/// in-process server of tests and benches ([`crate::harness::InProcess`]) both come through
/// here, so whatever this applies to connections applies to both.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = crate::http::server::Limits::resolve(&state.cfg.http);
    tracing::debug!(max_connections = limits.max_connections, "connection cap");
    crate::http::server::serve(listener, router(state), limits, shutdown).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
fn notify_systemd(msg: &str) {
    #[cfg(unix)]
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let sock = match std::os::unix::net::UnixDatagram::unbound() {
            Ok(s) => s,
            Err(_) => return,
        };
        let p = std::path::PathBuf::from(&path);
        let r = if let Some(abstract_name) = path.to_str().and_then(|s| s.strip_prefix('@')) {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                    .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = abstract_name;
                Ok(0)
            }
        } else {
            sock.send_to(msg.as_bytes(), &p)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

/// The keys a process talks to.
pub struct KeySources {
    pub sources: Vec<Arc<dyn DeviceSource>>,
    /// The simulated keys, when simulating (`/v1/sim`, their attestation CA, bench options).
    pub sim: Option<Arc<SimBench>>,
}

/// The one place "simulated keys or USB" is decided: under `simulate`, the simulated keys of
/// the data dir (created if needed); otherwise the USB keys of this machine.
pub fn key_sources(cfg: &Config) -> anyhow::Result<KeySources> {
    if !cfg.simulate {
        return Ok(KeySources {
            sources: vec![Arc::new(HidSource::new())],
            sim: None,
        });
    }
    ensure_data_dir(cfg)?;
    let bench = Arc::new(
        SimBench::open(&cfg.data_dir, cfg.simulate_seed)
            .map_err(|e| anyhow::anyhow!("simulated keys: {e}"))?,
    );
    Ok(KeySources {
        sources: vec![bench.clone() as Arc<dyn DeviceSource>],
        sim: Some(bench),
    })
}

/// The keys of this machine (USB), or the simulated keys of the data dir.
pub fn device_sources(cfg: &Config) -> anyhow::Result<Vec<Arc<dyn DeviceSource>>> {
    Ok(key_sources(cfg)?.sources)
}

/// `keygate devices`.
pub async fn list_devices(cfg: &Config) -> anyhow::Result<Vec<DeviceStatus>> {
    let mgr = DeviceManager::new(device_sources(cfg)?);
    mgr.statuses()
        .await
        .map_err(|e| anyhow::anyhow!("listing devices: {e}"))
}

#[cfg(test)]
mod tests {
    use super::log_colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some(OsStr::new(""))));
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None));
        assert!(!log_colour(false, Some(OsStr::new("1"))));
    }
}
