//! The `keygate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use keygate::auth::Role;
use keygate::config::{self, Config, Overrides};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "FIDO2 security keys and SMS codes for a campus, behind a local HTTP API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        #[command(flatten)]
        from: ConfigArgs,
        /// Listen address (default 127.0.0.1:8787).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Use simulated keys instead of USB keys, and expose /v1/sim.
        #[arg(long)]
        simulate: bool,
    },
    /// List the plugged security keys and what they support.
    Devices {
        #[command(flatten)]
        from: ConfigArgs,
        /// List the simulated keys of the data dir instead of USB keys.
        #[arg(long)]
        simulate: bool,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig { file: PathBuf },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print a one-time URL that opens the kiosk page with a kiosk session (no token to paste).
    KioskUrl {
        #[command(flatten)]
        from: ConfigArgs,
        /// Base URL the kiosk browser reaches keygate at.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        base: String,
    },
    /// Sign a user handoff as the campus sign-in would (for testing and demos): prints the token.
    KioskHandoff {
        #[command(flatten)]
        from: ConfigArgs,
        #[arg(long)]
        user: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Validity in seconds.
        #[arg(long, default_value_t = 300)]
        ttl: i64,
    },
    /// Run the bench suite against every plugged key; writes JSON, Markdown and JUnit reports.
    Bench {
        #[command(flatten)]
        from: ConfigArgs,
        /// Bench the simulated keys of the data dir instead of USB keys.
        #[arg(long)]
        simulate: bool,
        /// Where the reports go.
        #[arg(long, default_value = "keygate-bench-reports")]
        out: PathBuf,
        /// Silent CTAP round trips measured per key.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// The keys' PIN, for the user-verification steps (prefer the environment variable).
        #[arg(long, env = "KEYGATE_BENCH_PIN", hide_env_values = true)]
        pin: Option<String>,
        /// Also make a discoverable credential (uses a slot on the key) and verify user-less.
        #[arg(long)]
        discoverable: bool,
        #[arg(long, default_value_t = 30)]
        touch_timeout_secs: u64,
        /// Record every CTAP request/response to this file (JSON lines; simulated keys only:
        /// ctap-hid-fido2 does not expose a real key's bytes), with each ceremony's clientDataJSON.
        #[arg(long)]
        capture: Option<PathBuf>,
        /// With --simulate: configure every simulated key first, with the JSON body of
        /// `PATCH /v1/sim/keys/{id}` (e.g. '{"touch":"never"}' or '{"pin":"1234"}').
        #[arg(long, value_name = "JSON")]
        sim_key: Option<String>,
    },
    /// Check the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Move the data between stores (the SQLite file of a kiosk, the campus store).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Apply `[retention]` now: remove old SMS, ceremony and audit records and closed users
    /// past their grace period; prints a JSON report.
    Purge {
        #[command(flatten)]
        from: ConfigArgs,
        /// Apply retention as of this time (RFC 3339) instead of now.
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
        as_of: Option<time::OffsetDateTime>,
        /// Remove nothing: report what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// The FIDO Metadata Service BLOB of the attestation policy (`[attestation]`).
    Mds {
        #[command(subcommand)]
        action: MdsAction,
    },
    /// Explain why a security key is or is not usable on this machine.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for SHELL on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, every subcommand included.
    Man,
}

/// Where a subcommand's configuration comes from (the layers: defaults < file < `KEYGATE_*`
/// environment < these flags).
#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, secrets, simulated keys).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The one way every subcommand loads its configuration.
    fn load(self, listen: Option<std::net::SocketAddr>, simulate: bool) -> anyhow::Result<Config> {
        Ok(config::load(
            self.config.as_deref(),
            &Overrides {
                listen,
                data_dir: self.data_dir,
                simulate: simulate.then_some(true),
            },
        )?)
    }
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token; prints it, alone, on stdout (it is stored only as a hash).
    Create {
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        from: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum MdsAction {
    /// Verify a downloaded MDS3 BLOB (signature chain to `mds_root_ca`, nextUpdate not passed,
    /// serial not below the installed one) and install it where the daemon reads it (0600,
    /// atomically; a running daemon picks it up at its next enrollment).
    Update {
        /// The BLOB as downloaded from https://mds3.fidoalliance.org/ (a JWT).
        file: PathBuf,
        #[command(flatten)]
        from: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Copy every table of the configured SQLite store into an empty campus store
    /// (PostgreSQL) in one transaction, then check it (row counts, the audit chain); prints a
    /// JSON report. Afterwards set `[store] url` to the same URL on every kiosk.
    Migrate {
        /// The campus store, `postgres://user@host:port/db?sslmode=require`.
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        from: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Walk the audit chain read-only: exit 0 when intact, 1 naming the first bad entry, 2
    /// when the database cannot be read.
    Verify {
        /// A head kept elsewhere (from `GET /v1/audit/head` or the log): the chain must
        /// still reach it, with that hash.
        #[arg(long, value_name = "SEQ:HASH")]
        head: Option<keygate::store::GivenHead>,
        #[command(flatten)]
        from: ConfigArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run one store write from the command line: the store's writes go through its writer
/// thread and answer asynchronously, so a command waits on a small runtime of its own.
fn one_shot<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            from,
            listen,
            simulate,
        } => {
            let cfg = from.load(listen, simulate)?;
            keygate::daemon::init_tracing(&cfg);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(keygate::daemon::serve(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Devices { from, simulate } => {
            let cfg = from.load(None, simulate)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let devices = rt.block_on(keygate::daemon::list_devices(&cfg))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "devices": devices }))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            let from = ConfigArgs {
                config: Some(file),
                data_dir: None,
            };
            let cfg = from.load(None, false)?;
            println!("{cfg:#?}");
            let clock = std::sync::Arc::new(keygate::base::clock::SystemClock);
            let policy = keygate::attestation::AttestationPolicy::from_config(&cfg, clock)
                .map_err(|e| anyhow::anyhow!("attestation: {e}"))?;
            println!("{}", policy.summary());
            println!("configuration OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            action: TokenAction::Create { role, label, from },
        } => {
            let cfg = from.load(None, false)?;
            let store = keygate::daemon::open_store(&cfg)?;
            let token = one_shot(keygate::auth::create_token(&store, role, label.as_deref()))??;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::KioskUrl { from, base } => {
            let cfg = from.load(None, false)?;
            let store = keygate::daemon::open_store(&cfg)?;
            let (code, hash) = keygate::kiosk::new_session_code();
            let ttl = time::Duration::seconds(cfg.kiosk.session_code_ttl_secs as i64);
            one_shot(store.insert_kiosk_code(&hash, store.now() + ttl))??;
            println!("{}/kiosk/session?code={code}", base.trim_end_matches('/'));
            Ok(ExitCode::SUCCESS)
        }
        Command::KioskHandoff {
            from,
            user,
            display_name,
            ttl,
        } => {
            let cfg = from.load(None, false)?;
            keygate::daemon::ensure_data_dir(&cfg)?;
            let secret = keygate::kiosk::handoff_secret(&cfg)?;
            let h = keygate::kiosk::Handoff {
                display_name: display_name.unwrap_or_else(|| user.clone()),
                user,
                exp: time::OffsetDateTime::now_utc().unix_timestamp() + ttl,
            };
            println!("{}", keygate::kiosk::sign_handoff(&secret, &h));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            from,
            simulate,
            out,
            iterations,
            pin,
            discoverable,
            touch_timeout_secs,
            capture,
            sim_key,
        } => {
            let cfg = from.load(None, simulate)?;
            if !cfg.simulate {
                if capture.is_some() {
                    anyhow::bail!("--capture works with --simulate only (ctap-hid-fido2 hides a real key's bytes)");
                }
                if sim_key.is_some() {
                    anyhow::bail!("--sim-key configures simulated keys: it needs --simulate");
                }
            }
            let keys = keygate::daemon::key_sources(&cfg)?;
            let mut sink = None;
            if let Some(bench) = &keys.sim {
                if let Some(json) = &sim_key {
                    let change: keygate::device::sim::SimKeyOptions = serde_json::from_str(json)
                        .map_err(|e| anyhow::anyhow!("--sim-key: {e}"))?;
                    for key in bench.list() {
                        bench.configure(&key.id, change.clone())?;
                    }
                }
                if let Some(path) = &capture {
                    bench.capture_to(path)?;
                    sink = Some(std::sync::Arc::new(
                        keygate::device::capture::CaptureSink::create(path)?,
                    ));
                }
            }
            let opts = keygate::hwbench::BenchOptions {
                iterations: iterations.max(1),
                pin,
                discoverable,
                touch_timeout: std::time::Duration::from_secs(touch_timeout_secs),
                capture: sink,
            };
            bench(keys.sources, &opts, &out)
        }
        Command::Audit {
            action: AuditAction::Verify { head, from },
        } => audit_verify(&from.load(None, false)?, head.as_ref()),
        Command::Store {
            action: StoreAction::Migrate { to, from },
        } => {
            let report = keygate::daemon::migrate_store(&from.load(None, false)?, to)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge {
            from,
            as_of,
            dry_run,
        } => {
            let cfg = from.load(None, false)?;
            let store = keygate::daemon::open_store(&cfg)?;
            let as_of = as_of.unwrap_or_else(|| store.now());
            let report = one_shot(store.purge(as_of, dry_run, (&cfg.retention).into()))??;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Mds {
            action: MdsAction::Update { file, from },
        } => {
            let cfg = from.load(None, false)?;
            if cfg.attestation.mds_blob.is_none() {
                keygate::daemon::ensure_data_dir(&cfg)?;
            }
            let done = keygate::attestation::install_blob(
                &cfg,
                &file,
                &keygate::base::clock::SystemClock,
            )?;
            println!(
                "installed FIDO metadata BLOB no {} (next update {}, {} entries{}) at {}",
                done.no,
                done.next_update,
                done.entries,
                done.replaced
                    .map(|n| format!(", replacing no {n}"))
                    .unwrap_or_default(),
                done.path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { json } => {
            let report = keygate::doctor::run_doctor();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "keygate", &mut script);
            to_stdout(&script)
        }
        Command::Man => to_stdout(man_page()?.as_bytes()),
    }
}

/// Write all of `bytes` to stdout: a closed pipe (`| head`) is an error, not a panic.
fn to_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One page for the whole CLI (`man keygate`): clap_mangen's name, synopsis, description
/// and options, then a COMMANDS section with each subcommand, nested ones included, as its own
/// subsection (clap_mangen alone would point at keygate-serve(1) and friends, pages the
/// package does not ship), then the files and environment of the service.
fn man_page() -> anyhow::Result<String> {
    let mut cmd = Cli::command()
        .bin_name("keygate")
        .disable_help_subcommand(true);
    cmd.build();
    let top = clap_mangen::Man::new(cmd.clone());
    let mut parts = Vec::new();
    top.render_name_section(&mut parts)?;
    top.render_synopsis_section(&mut parts)?;
    top.render_description_section(&mut parts)?;
    top.render_options_section(&mut parts)?;
    // The roff crate's preamble (the `\*(Aq` quote string) once, and a .TH with an explicit
    // empty date: roff drops an empty argument, which would shift the source into the date.
    let mut page = format!(
        "{ROFF_PREAMBLE}.TH KEYGATE 1 \"\" \"keygate {}\" \"keygate manual\"\n",
        env!("CARGO_PKG_VERSION")
    );
    push_roff(&mut page, parts, false)?;
    page.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands() {
        man_command(sub, &mut page)?;
    }
    page.push_str(MAN_TAIL);
    Ok(page)
}

/// What every `roff` render starts with (`.ie \n(.g .ds Aq \(aq` / `.el .ds Aq '`).
const ROFF_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// Append clap_mangen's roff to `page` without its preambles; with `demote`, its `.SH`
/// headings become paragraph breaks (inside a command's subsection).
fn push_roff(page: &mut String, roff: Vec<u8>, demote: bool) -> anyhow::Result<()> {
    let roff = String::from_utf8(roff)?;
    let preamble: Vec<&str> = ROFF_PREAMBLE.lines().collect();
    for line in roff.lines().filter(|l| !preamble.contains(l)) {
        page.push_str(if demote && line.starts_with(".SH ") {
            ".PP"
        } else {
            line
        });
        page.push('\n');
    }
    Ok(())
}

/// One subcommand's subsection (its description, synopsis and options), then its own
/// subcommands'.
fn man_command(cmd: &clap::Command, page: &mut String) -> anyhow::Result<()> {
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
    page.push_str(&format!(".SS \"{name}\"\n"));
    let man = clap_mangen::Man::new(cmd.clone());
    let mut parts = Vec::new();
    man.render_description_section(&mut parts)?;
    man.render_synopsis_section(&mut parts)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut parts)?;
    }
    push_roff(page, parts, true)?;
    for sub in cmd.get_subcommands() {
        man_command(sub, page)?;
    }
    Ok(())
}

/// Where the Debian package puts things (dist/, Cargo.toml's `[package.metadata.deb]`).
const MAN_TAIL: &str = r#".SH FILES
.TP
\fI/etc/keygate/keygate.toml\fR
The configuration of the packaged service (a conffile).
.TP
\fI/var/lib/keygate/\fR
The data directory: the SQLite database, the audit chain's head key, secrets (mode 0700, user keygate).
.TP
\fI/usr/lib/systemd/system/keygate.service\fR
The hardened systemd unit; \fBsystemctl start keygate\fR.
.SH ENVIRONMENT
Every configuration key can be set as \fBKEYGATE_\fR\fIKEY\fR (nested keys joined by \fB__\fR); the layers are defaults, the file, the environment, then the command line flags.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBudevadm\fR(8)
"#;

fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// `keygate audit verify` on the configured store (the SQLite file in the data dir, or the
/// campus store), with the head key in the data dir when readable.
fn audit_verify(
    cfg: &keygate::config::Config,
    head: Option<&keygate::store::GivenHead>,
) -> anyhow::Result<ExitCode> {
    let db = cfg.data_dir.join("keygate.db");
    let verdict = keygate::daemon::verify_audit(cfg, head)?;
    match verdict {
        Ok(verdict) => {
            for note in &verdict.notes {
                eprintln!("note: {note}");
            }
            println!("{verdict}");
            Ok(ExitCode::from(u8::from(verdict.broken.is_some())))
        }
        Err(e) => {
            eprintln!("keygate: cannot verify {}: {e}", db.display());
            Ok(ExitCode::from(2))
        }
    }
}

/// `keygate bench` once its keys are chosen: each key behind its actor thread, as in the
/// daemon (the actor enforces every step's deadline and cancels the key at it).
fn bench(
    sources: Vec<std::sync::Arc<dyn keygate::device::DeviceSource>>,
    opts: &keygate::hwbench::BenchOptions,
    out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let keys = keygate::device::actor::DeviceManager::new(sources).refresh()?;
    if keys.is_empty() {
        eprintln!("no security key found (see `keygate doctor`)");
        return Ok(ExitCode::from(1));
    }
    let mut all_passed = true;
    for (n, key) in keys.iter().enumerate() {
        eprintln!("key {} of {}: {}", n + 1, keys.len(), key.id());
        let report = keygate::hwbench::bench_key(key, opts, &|line| eprintln!("{line}"));
        keygate::hwbench::write_reports(out, n + 1, &report)?;
        all_passed &= report.passed;
        println!(
            "{} {}: {}",
            if report.passed { "PASS" } else { "FAIL" },
            key.id(),
            report
                .device
                .model
                .clone()
                .unwrap_or_else(|| report.device.product.clone())
        );
    }
    eprintln!("reports in {}", out.display());
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
