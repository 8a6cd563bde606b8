//! Start-up: open the database, check the encryption keys against the data, make sure an
//! admin key exists, then build and run the HTTP server (graceful on SIGTERM/SIGINT).

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::dev::Server;
use anyhow::{Context, bail};

use crate::clock::{DynClock, SystemClock};
use crate::config::Settings;
use crate::crypto::{Aad, Keyring, OpenError};
use crate::service::Broker;
use crate::service::keys::{Bootstrap, bootstrap};
use crate::store::{self, AnyPool, Backend, DynStore};

const KEY_CHECK: &str = "key_check";
const KEY_CHECK_PLAINTEXT: &str = "oauth-broker key check v1";
const KEY_CHECK_AAD: Aad<'static> = Aad {
    org_id: "-",
    row_id: "meta",
    field: KEY_CHECK,
};

/// Where the key file is: as configured, else beside the SQLite database.
pub fn key_file_path(settings: &Settings) -> Option<PathBuf> {
    settings.encryption_key_file.clone().or_else(|| {
        store::sqlite_path(secrecy::ExposeSecret::expose_secret(&settings.database_url))
            .map(|p| p.with_extension("key"))
    })
}

/// Opens and migrates the database, then chooses the keyring and proves it opens the
/// data already there. Refuses (with what to do) rather than run with the wrong key.
pub async fn open_store(settings: &Settings) -> anyhow::Result<DynStore> {
    use secrecy::ExposeSecret;
    let pool = store::open_pool(&settings.database_url, settings.database_max_connections)
        .await
        .with_context(|| {
            format!(
                "opening the database {}",
                store::redact_database_url(settings.database_url.expose_secret())
            )
        })?;
    let keyring = Arc::new(choose_keyring(settings, &pool).await?);
    let lookups = Arc::new(store::Lookups::new(settings.credentials_cache()));
    let store = pool.store(keyring.clone(), lookups);
    match store.get_meta(KEY_CHECK).await? {
        None => {
            store
                .put_meta(KEY_CHECK, &keyring.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD))
                .await?;
        }
        Some(sealed) => match keyring.open(&sealed, KEY_CHECK_AAD) {
            Ok(_) => {}
            Err(OpenError::UnknownKey(kid)) => bail!(
                "the stored secrets were encrypted with key id `{kid}`, which is not configured \
                 (configured: {:?}). Add that key to OAUTH_BROKER_ENCRYPTION_KEYS (after the active key) \
                 or restore the key file; keep old keys listed until `oauth-broker rotate-keys` has run.",
                keyring
            ),
            Err(OpenError::Forged(kid)) => bail!(
                "the configured key `{kid}` is not the key the stored secrets were encrypted with: \
                 the key id matches but the key bytes differ. Restore the original key for `{kid}`; \
                 do not start with a new key under an old id."
            ),
            Err(OpenError::Malformed) => {
                bail!("the stored key check is unreadable; the meta table was altered")
            }
        },
    }
    Ok(store)
}

async fn choose_keyring(settings: &Settings, pool: &AnyPool) -> anyhow::Result<Keyring> {
    if let Some(spec) = &settings.encryption_keys {
        return Keyring::parse(spec).context("reading OAUTH_BROKER_ENCRYPTION_KEYS");
    }
    let Some(path) = key_file_path(settings) else {
        bail!(
            "no encryption key is configured. Set OAUTH_BROKER_ENCRYPTION_KEYS=k1:<base64 of 32 random bytes> \
             (e.g. `echo k1:$(openssl rand -base64 32)`) or OAUTH_BROKER_ENCRYPTION_KEY_FILE; \
             every replica sharing the database needs the same keys."
        );
    };
    if path.exists() {
        warn_if_others_may_read(&path);
        return Keyring::from_file(&path)
            .with_context(|| format!("reading the key file {}", path.display()));
    }
    // Probe with a throwaway key: only counts and the presence of the check are read.
    let probe = pool.store(
        Arc::new(Keyring::generate("probe").0),
        Arc::new(store::Lookups::off()),
    );
    let has_data =
        probe.get_meta(KEY_CHECK).await?.is_some() || probe.count_sealed_rows().await? > 0;
    if has_data {
        bail!(
            "the database holds encrypted secrets but the key file {} is missing. Restore it from \
             your backup, or set OAUTH_BROKER_ENCRYPTION_KEYS to the keys the data was encrypted with. \
             Starting with a new key would make every stored secret unreadable.",
            path.display()
        );
    }
    if pool.backend() == Backend::Postgres && settings.encryption_key_file.is_none() {
        bail!("no encryption key is configured for PostgreSQL: set OAUTH_BROKER_ENCRYPTION_KEYS");
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the folder of {}", path.display()))?;
    }
    let ring = Keyring::create_file(&path, "k1")?;
    tracing::warn!(
        path = %path.display(),
        "no encryption key was configured: created a new key file (mode 0600). Back it up: \
         without it the stored secrets cannot be read"
    );
    Ok(ring)
}

/// The key file opens every stored secret: say so when other users may read it.
fn warn_if_others_may_read(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the encryption key file can be read by other users: `chmod 600` it"
            );
        }
    }
}

pub struct Application {
    port: u16,
    server: Server,
    broker: Arc<Broker>,
    scheduler: Option<tokio_cron_scheduler::JobScheduler>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds with a given clock (tests move it).
    pub async fn build_with_clock(settings: Settings, clock: DynClock) -> anyhow::Result<Self> {
        let store = open_store(&settings).await?;
        ensure_admin_key(&store, &settings, clock.now()).await?;

        let listener =
            bind(&settings.listen).with_context(|| format!("binding {}", settings.listen))?;
        let address = listener.local_addr()?;
        let broker = Broker::new(
            store,
            clock,
            settings.clone(),
            settings.public_base(&address),
        );
        let server = crate::http::server(broker.clone(), listener, settings.http_workers)?;
        let scheduler = if settings.refresher_enabled {
            let delay = std::time::Duration::from_secs(settings.refresh_startup_delay_seconds);
            Some(crate::service::refresher::schedule(broker.clone(), delay).await?)
        } else {
            None
        };
        tracing::info!(address = %address, public_url = %broker.public_base, "listening");
        Ok(Self {
            port: address.port(),
            server,
            broker,
            scheduler,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service context the server runs with (tests run the refresher through it).
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until SIGTERM or SIGINT, then lets in-flight requests finish (30 s at most).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some(mut scheduler) = self.scheduler {
            // No new ticks; a run in progress ends with the process (its leases expire).
            let _ = scheduler.shutdown().await;
        }
        result
    }
}

/// New connections the kernel queues while the workers are busy. std binds with 128:
/// a burst beyond that (1,000 callers at once, measured) waits out the kernel's 1 s SYN
/// retransmission. Linux caps it at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: i32 = 2048;

/// Binds `listen` (`host:port`; port 0 picks one) with a listen queue of `LISTEN_BACKLOG`.
pub fn bind(listen: &str) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let mut last_error = None;
    for address in listen.to_socket_addrs()? {
        let attempt = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .and_then(|socket| {
            socket.set_reuse_address(true)?;
            socket.bind(&address.into())?;
            socket.listen(LISTEN_BACKLOG)?;
            Ok(TcpListener::from(socket))
        });
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Makes sure an operator has a way in: registers `OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY`,
/// or, when no API key exists at all, creates a first admin key (every org) and prints
/// it once on stderr. Runs before serving and before `keys create`, so a first key
/// made on the command line never leaves the service without an admin.
pub async fn ensure_admin_key(
    store: &DynStore,
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    match bootstrap(store, settings.bootstrap_admin_key.as_ref(), now).await? {
        Bootstrap::CreatedFirstKey(key) => {
            // Deliberately not a log line: the key is shown once, to the operator.
            eprintln!(
                "\n  No API key existed, so a first admin key (every org) was created.\n  \
                 It is shown only now; store it safely:\n\n    {key}\n\n  \
                 Use it as `Authorization: Bearer <key>`. Create more with POST /api/oauth/keys.\n"
            );
        }
        Bootstrap::RegisteredConfiguredKey => {
            tracing::info!(
                "registered OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY as an admin key for every org"
            );
        }
        Bootstrap::Nothing => {}
    }
    Ok(())
}

/// Re-seals every secret, and the key check, under the active key.
pub async fn rotate_keys(settings: &Settings) -> anyhow::Result<store::RotationReport> {
    let store = open_store(settings).await?;
    let report = store.rotate_keys().await?;
    let keyring = store.keyring();
    store
        .put_meta(KEY_CHECK, &keyring.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD))
        .await?;
    tracing::info!(
        resealed = report.resealed,
        current = report.current,
        active = keyring.active_kid(),
        "keys rotated"
    );
    Ok(report)
}
