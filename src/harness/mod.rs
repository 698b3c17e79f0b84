//! The one way tests, benches and hw-tests start a keygate (not part of the public API).
//!
//! Two shapes, both listening on a fresh loopback port:
//! - [`InProcess`]: the application state of [`crate::daemon::build_state`] served in this
//!   process through [`crate::daemon::serve_http`], the function the daemon itself serves with,
//!   so the test server gets whatever that applies to connections;
//! - [`Spawned`]: the real binary (`keygate serve`) as a child process, ready once it printed
//!   [`crate::daemon::READY_LINE_PREFIX`] on stdout; killed (SIGKILL) when dropped.
//!
//! Helpers panic instead of returning errors: a harness that cannot start is a failed test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub mod pg;

use crate::config::{parse_config, Config, Overrides};
use crate::daemon::READY_LINE_PREFIX;
use crate::http::SharedState;

/// `toml` layered as a config file over the defaults, with `data_dir`, `simulate` and a
/// loopback port-0 listen address on top (no environment layer: tests stay hermetic). Under
/// `KG_TEST_STORE=postgres` the data dir's own database on the test cluster is the
/// store (see [`pg`]), unless `toml` names a `[store]` itself.
pub fn config(data_dir: &Path, toml: &str, simulate: bool) -> Config {
    let toml = if toml.contains("[store]") {
        toml.to_string()
    } else {
        format!("{toml}{}", pg::store_toml(data_dir))
    };
    parse_config(
        Some(&toml),
        &[],
        &Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            simulate: Some(simulate),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        },
    )
    .expect("harness config")
}

/// The environment that points a `keygate` command on `data_dir` at that data dir's store:
/// its database on the test cluster under `KG_TEST_STORE=postgres`, nothing otherwise.
pub fn store_env(data_dir: &Path) -> Vec<(String, String)> {
    if !pg::enabled() {
        return Vec::new();
    }
    let c = pg::cluster();
    vec![(
        "KEYGATE_STORE__URL".into(),
        c.url(&c.database_for(data_dir)),
    )]
}

/// A connection to the database of the keygate on `data_dir`, behind keygate's back (tests
/// that damage or age rows): its SQLite file, or its database on the test cluster.
pub fn raw_db(data_dir: &Path) -> crate::store::db::Connection {
    if pg::enabled() {
        let c = pg::cluster();
        return c.connect(&c.database_for(data_dir));
    }
    crate::store::db::Connection::open_sqlite(&data_dir.join("keygate.db"))
        .expect("open the database")
}

/// `keygate token create --role ROLE --data-dir DIR`, run as the binary `bin` with the store
/// this process's tests use ([`store_env`]) and then `env` (which may name another): the token,
/// which must be all it printed.
pub fn cli_token(bin: &str, dir: &Path, role: &str, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(bin)
        .args(["token", "create", "--role", role, "--data-dir"])
        .arg(dir)
        .envs(store_env(dir))
        .envs(env.iter().copied())
        .output()
        .expect("run keygate token create");
    assert!(
        out.status.success(),
        "keygate token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("the token is text");
    assert_eq!(
        token.lines().count(),
        1,
        "the token alone on stdout: {token:?}"
    );
    token.trim().to_string()
}

/// A keygate served in this process on a loopback socket; stops when dropped.
pub struct InProcess {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub state: SharedState,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Serve `state` on a fresh loopback port. Must be called inside a tokio runtime.
    pub async fn start(state: SharedState) -> InProcess {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let served = state.clone();
        let task = tokio::spawn(async move {
            crate::daemon::serve_http(listener, served, std::future::pending())
                .await
                .expect("in-process keygate");
        });
        InProcess {
            addr,
            base: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// [`config`] + [`crate::daemon::build_state`] + [`InProcess::start`].
    pub async fn start_config(data_dir: &Path, toml: &str, simulate: bool) -> InProcess {
        let state = crate::daemon::build_state(config(data_dir, toml, simulate)).expect("state");
        Self::start(state).await
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real binary serving on a loopback port; SIGKILLed when dropped.
pub struct Spawned {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from the ready line.
    pub base: String,
}

impl Spawned {
    /// `<bin> serve --simulate --listen 127.0.0.1:0 --data-dir <data_dir>`, `RUST_LOG=warn`,
    /// stdout piped (for the ready line), stderr discarded. Add flags, environment or another
    /// stderr before [`Spawned::spawn`].
    pub fn command(bin: impl AsRef<std::ffi::OsStr>, data_dir: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--simulate",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .envs(store_env(data_dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        cmd
    }

    /// Start `cmd` (stdout piped) and wait for its ready line.
    pub fn spawn(cmd: &mut Command) -> Spawned {
        let mut child = cmd.spawn().expect("start keygate");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped"))
            .read_line(&mut line)
            .expect("read the ready line");
        let base = match line.trim().strip_prefix(READY_LINE_PREFIX) {
            Some(base) => base.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("unexpected first line: {line:?}");
            }
        };
        Spawned { child, base }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill keygate");
        self.child.wait().expect("reap keygate");
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
