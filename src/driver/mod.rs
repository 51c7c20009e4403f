//! The API: domains, checkpoints, snapshots, backups, jobs, rules, metadata.
//!
//! - `domain.rs`, `lifecycle.rs`, `launch.rs`, `agent.rs`: domains, their
//!   QEMU runs and the guest-agent calls; `registry.rs` the domains known.
//! - [`moments`]: what checkpoints and snapshots share (the tree, the
//!   references, lookup / parent / list); [`checkpoint`] and [`snapshot`]
//!   the rest of each; `rules.rs` keeps the two apart; `reconcile.rs`
//!   brings checkpoint metadata and QEMU's bitmaps together.
//! - `backup.rs`, [`jobs`]: backups and the domain job.
//! - [`store`]: metadata on disk (atomic writes); `metadata.rs` the
//!   metadata files' header and the store's calls off the async threads.
//! - [`events`], [`error`]: what the driver reports.
//!
//! Every public method takes and returns plain Rust values; nothing here
//! knows XDR or JSON. Methods that name a domain take a [`DomainRef`] (what
//! the client holds as a handle) and resolve it by UUID, as libvirt does.
//! Flags are libvirt's public API flags and are checked here, so that an
//! unknown bit is refused with libvirt's own "unsupported flags" error.

pub mod agent;
mod backup;
mod blockinfo;
mod blockjob;
pub mod checkpoint;
mod domain;
pub mod error;
pub mod events;
pub mod jobs;
mod launch;
mod lifecycle;
mod metadata;
pub mod moments;
mod pause;
mod reconcile;
mod registry;
#[cfg(test)]
#[path = "rollback_tests.rs"]
mod rollback_tests;
mod rules;
pub mod snapshot;
mod stats;
pub mod store;
#[cfg(test)]
mod test_harness;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::broadcast;

pub use checkpoint::{CheckpointRef, Checkpoints};
pub use error::{DriverError, ErrorKind, ErrorOrigin};
pub use events::{DomainEvent, Lifecycle};
pub use moments::MomentRef;
pub use registry::state;
pub use snapshot::{SnapshotRef, Snapshots};

use registry::Registry;
use store::Metadata;

pub type Uuid = [u8; 16];

/// The raw UUID of a definition, as the wire and the registry key it.
pub(crate) fn uuid_of(def: &crate::conf::DomainDef) -> Uuid {
    *def.uuid().as_bytes()
}

/// A domain as a client names it: libvirt's virDomainPtr contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRef {
    pub name: String,
    pub uuid: Uuid,
    /// -1 while the domain is not running.
    pub id: i32,
}

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The emulator whose version virConnectGetVersion reports (domains
    /// name their own; conf fills in this same default).
    pub qemu: PathBuf,
    /// Ports a pull backup's TCP NBD server gets when it names none.
    pub nbd_ports: std::ops::RangeInclusive<u16>,
    /// The mode of a pull backup's unix NBD socket: by default only the
    /// daemon's own user can connect.
    pub nbd_socket_mode: u32,
    /// Where QEMU reads the x509 credentials of a pull backup's server
    /// asked for with `tls='yes'` (libvirt's backup_tls_x509_cert_dir).
    pub backup_tls_dir: PathBuf,
    /// The speed, in bytes/s, every new push backup's copy starts at
    /// (`None`: unlimited, as libvirt); `virsh blockjob --bandwidth`
    /// changes it per disk while the backup runs.
    pub backup_speed: Option<u64>,
    /// Seconds a guest write may wait for a push backup's copy-before-write
    /// before the backup breaks instead (`None`: as long as it takes, as
    /// libvirt); see `qemu::cbw`.
    pub backup_cbw_timeout: Option<u32>,
}

impl DriverConfig {
    /// The defaults for everything but the directories and the emulator.
    pub fn new(state_dir: PathBuf, run_dir: PathBuf, qemu: PathBuf) -> DriverConfig {
        DriverConfig {
            state_dir,
            run_dir,
            qemu,
            nbd_ports: 10809..=10872,
            nbd_socket_mode: 0o600,
            backup_tls_dir: PathBuf::from("/etc/pki/qemu"),
            backup_speed: None,
            backup_cbw_timeout: None,
        }
    }
}

/// The libvirt release whose API and behaviour we mirror (9.0.0).
pub const LIB_VERSION: u64 = 9_000_000;

/// Driver handle; cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Driver {
    shared: Arc<Shared>,
}

struct Shared {
    config: DriverConfig,
    store: Metadata,
    domains: Registry,
    events: broadcast::Sender<DomainEvent>,
    hv_version: u64,
}

impl Driver {
    /// Loads the stored definitions and reconnects to every QEMU a previous
    /// run of the daemon left running.
    pub async fn open(config: DriverConfig) -> Result<Driver, DriverError> {
        let store = Metadata::open(&config.state_dir, &config.run_dir).await?;
        let hv_version = crate::qemu::hypervisor_version(&config.qemu)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(qemu = %config.qemu.display(), %err, "cannot read the QEMU version");
                0
            });
        let (events, _) = broadcast::channel(1024);
        let driver = Driver {
            shared: Arc::new(Shared {
                config,
                store,
                domains: Registry::default(),
                events,
                hv_version,
            }),
        };
        driver.load_configs().await?;
        driver.reconnect_all().await;
        driver.load_checkpoints().await;
        driver.load_snapshots().await;
        for obj in driver.shared.domains.all() {
            driver.reconcile_checkpoints(&obj).await;
            driver.settle_snapshot_intents(&obj).await;
        }
        Ok(driver)
    }

    /// Every event the driver raises from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DomainEvent> {
        self.shared.events.subscribe()
    }

    fn emit(&self, event: DomainEvent) {
        // No receiver is fine: nobody registered for events.
        let _ = self.shared.events.send(event);
    }

    /// The host name, as virConnectGetHostname reports it.
    pub fn hostname(&self) -> String {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }

    /// QEMU's version in libvirt's encoding (major * 1e6 + minor * 1e3 + micro).
    pub fn hypervisor_version(&self) -> u64 {
        self.shared.hv_version
    }

    pub fn config(&self) -> &DriverConfig {
        &self.shared.config
    }
}
