//! A throwaway PostgreSQL for tests and benches: one cluster per test process (`initdb` in a
//! temporary directory, as the `postgres` user when run as root since `initdb` refuses root;
//! loopback only, trust authentication), and one fresh database per keygate data dir.
//!
//! Chosen by `KG_TEST_STORE=postgres` (the test command runs the API, SMS and kiosk
//! suites once more that way); absent, tests run on SQLite as before. The cluster's server
//! is stopped by a watchdog when the test process ends, however it ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Whether this process runs its keygates on PostgreSQL (`KG_TEST_STORE=postgres`).
pub fn enabled() -> bool {
    std::env::var("KG_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// A running cluster: its port and data directory.
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    databases: Mutex<HashMap<PathBuf, String>>,
    next: Mutex<u32>,
    /// The watchdog shell that owns the server (it outlives this process by design: it stops
    /// the server once this process is gone).
    _watchdog: Mutex<std::process::Child>,
}

/// The directory holding `initdb`, `postgres` and `pg_ctl` (Debian's layout, newest version).
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian package `postgresql`; scripts/setup --test)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("a PostgreSQL server version under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args...`, as the `postgres` user when this process is root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The process's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster)
}

fn start_cluster() -> Cluster {
    let bin = bin_dir();
    let dir = std::env::temp_dir().join(format!("keygate-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cluster dir");
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown the cluster dir to postgres");
    }
    let data = dir.join("data");
    let out = as_server_user(&bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    // `KEYGATE_TEST_PG_OPTS`: more server options (`-c name=value ...`), for profiling.
    // The server runs under a watchdog shell: when this test process is gone, the server is
    // stopped (fast shutdown) and its directory removed.
    let script = format!(
        "'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 {extra} \
         >'{dir}/server.log' 2>&1 & pid=$!; \
         while [ -d /proc/{parent} ] && kill -0 $pid 2>/dev/null; do sleep 0.5; done; \
         kill -INT $pid 2>/dev/null; wait $pid; rm -rf '{dir}'",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
        parent = std::process::id(),
        extra = std::env::var("KEYGATE_TEST_PG_OPTS").unwrap_or_default(),
    );
    let mut sh = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let watchdog = sh
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the PostgreSQL server");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not start: see {}/server.log",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Cluster {
        port,
        dir,
        databases: Mutex::new(HashMap::new()),
        next: Mutex::new(0),
        _watchdog: Mutex::new(watchdog),
    }
}

impl Cluster {
    /// A URL for database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// A fresh, empty database.
    pub fn new_database(&self) -> String {
        let name = {
            let mut n = self.next.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            format!("kg_{}_{}", std::process::id(), *n)
        };
        self.sql(&format!("CREATE DATABASE {name}"));
        name
    }

    /// The database of keygate data dir `data_dir` (made on first use, so a keygate started
    /// again on the same dir finds its data, as with its SQLite file).
    pub fn database_for(&self, data_dir: &Path) -> String {
        let key = data_dir.to_path_buf();
        if let Some(db) = self
            .databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return db.clone();
        }
        let db = self.new_database();
        self.databases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, db.clone());
        db
    }

    /// A connection to database `name` (as the superuser).
    pub fn connect(&self, name: &str) -> crate::store::db::Connection {
        let target = crate::store::db::PgTarget::parse(&self.url(name), Duration::from_secs(30))
            .expect("cluster URL");
        let now: crate::store::db::NowFn =
            Arc::new(|| crate::store::fmt_time(time::OffsetDateTime::now_utc()));
        crate::store::db::Connection::postgres(Arc::new(target), now)
    }

    /// PostgreSQL's own ceiling on this machine, in statements per second: `pgbench`'s
    /// TPC-B-like transactions (BEGIN, three UPDATEs, a SELECT, an INSERT, END: 7 statements)
    /// with prepared statements from `clients` connections for `secs` seconds, on a database of
    /// its own. pgbench is the leanest client there is, so no application of the same machine
    /// gets more statements through this server.
    pub fn pgbench_statements_per_s(&self, clients: u32, secs: u32) -> f64 {
        let db = self.new_database();
        let pgbench = bin_dir().join("pgbench");
        let (port, clients, secs) = (self.port.to_string(), clients.to_string(), secs.to_string());
        let common = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
        let init = Command::new(&pgbench)
            .args(common)
            .args(["-i", "-q", "-s", "2", &db])
            .output()
            .expect("run pgbench -i");
        assert!(
            init.status.success(),
            "pgbench -i: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let run = Command::new(&pgbench)
            .args(common)
            .args([
                "-n",
                "-M",
                "prepared",
                "-b",
                "tpcb-like",
                "-c",
                &clients,
                "-j",
                &clients,
            ])
            .args(["-T", &secs, &db])
            .output()
            .expect("run pgbench");
        let out = String::from_utf8_lossy(&run.stdout);
        let tps: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("pgbench printed no tps: {out}"));
        7.0 * tps
    }

    /// Run `sql` on the maintenance database (as the superuser).
    pub fn sql(&self, sql: &str) {
        self.connect("postgres")
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The `[store]` section a keygate on `data_dir` gets in this process: its own database when
/// tests run on PostgreSQL, nothing (SQLite) otherwise.
pub fn store_toml(data_dir: &Path) -> String {
    if !enabled() {
        return String::new();
    }
    let c = cluster();
    format!(
        "\n[store]\nurl = \"{}\"\n",
        c.url(&c.database_for(data_dir))
    )
}
