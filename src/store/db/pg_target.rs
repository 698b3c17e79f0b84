//! Where the campus store is: a `postgres://` URL parsed once, with TLS set up and the
//! timeout every call waits at most.

use std::sync::Arc;
use std::time::Duration;

/// Where the campus store is and how long to wait for it.
pub struct PgTarget {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The most one call (or connecting) may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parse a `postgres://user:password@host:port/db?sslmode=...` URL. TLS (sslmode
    /// `prefer`, the default, or `require`) verifies the server against the system's roots.
    pub fn parse(url: &str, timeout: Duration) -> std::result::Result<PgTarget, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        config.application_name("keygate");
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(PgTarget {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            timeout,
        })
    }

    /// The database name, for messages.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }
}
