//! Command line and start-up only.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use virtbackupd::driver::{Driver, DriverConfig};
use virtbackupd::rpc::{self, ServerConfig};

/// A daemon that speaks libvirt's RPC protocol for backups, checkpoints and
/// snapshots, and carries the calls out on QEMU over QMP.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Read-write socket; point virsh at it with
    /// qemu+unix:///system?socket=PATH.
    #[arg(long, default_value = "/run/virtbackupd/libvirt-sock")]
    listen: PathBuf,
    /// Read-only socket (every call that changes something is refused).
    #[arg(long, default_value = "/run/virtbackupd/libvirt-sock-ro")]
    listen_ro: PathBuf,
    /// Persistent state: domain definitions and metadata.
    #[arg(long, default_value = "/var/lib/virtbackupd")]
    state_dir: PathBuf,
    /// Live state of running domains (QMP sockets, pid files).
    #[arg(long, default_value = "/run/virtbackupd")]
    run_dir: PathBuf,
    /// The emulator whose version the daemon reports.
    #[arg(long, default_value = "/usr/bin/qemu-system-x86_64")]
    qemu: PathBuf,
    /// Seconds of silence before pinging a client that asked for keepalive.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    keepalive_interval: u64,
    /// Unanswered pings after which such a client is disconnected.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    keepalive_count: u32,
    /// Ports for a pull backup's TCP NBD server that names none: MIN-MAX.
    #[arg(long, default_value = "10809-10872", value_parser = parse_port_range)]
    nbd_port_range: std::ops::RangeInclusive<u16>,
    /// Octal mode of a pull backup's unix NBD socket (0600: only the
    /// daemon's user can connect; 0660 lets its group in too).
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    nbd_socket_mode: u32,
    /// Directory with ca-cert.pem, server-cert.pem and server-key.pem for
    /// pull backups asking for tls='yes'.
    #[arg(long, default_value = "/etc/pki/qemu")]
    backup_tls_dir: PathBuf,
    /// Threads that run calls and QMP sessions (files and qemu-img have a
    /// pool of their own). One keeps the CPU per call lowest: a call is
    /// answered by the thread that read it, with no hand-over; more help
    /// only where calls themselves keep a thread busy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: u16,
}

fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("'{text}' is not MIN-MAX"))?;
    let min: u16 = min.trim().parse().map_err(|e| format!("{min}: {e}"))?;
    let max: u16 = max.trim().parse().map_err(|e| format!("{max}: {e}"))?;
    if min == 0 || min > max {
        return Err(format!("'{text}' is not a range of ports"));
    }
    Ok(min..=max)
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text, 8).map_err(|e| format!("{text}: {e}"))?;
    if mode > 0o777 {
        return Err(format!("'{text}' is not a file mode"));
    }
    Ok(mode)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.worker_threads))
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let state_dir = absolute(&args.state_dir)?;
    let run_dir = absolute(&args.run_dir)?;
    let driver = Driver::open(DriverConfig {
        nbd_ports: args.nbd_port_range,
        nbd_socket_mode: args.nbd_socket_mode,
        backup_tls_dir: args.backup_tls_dir,
        ..DriverConfig::new(state_dir, run_dir, args.qemu)
    })
    .await
    .context("cannot start the driver")?;
    let config = ServerConfig {
        listen: absolute(&args.listen)?,
        listen_ro: Some(absolute(&args.listen_ro)?),
        keepalive_interval: Duration::from_secs(args.keepalive_interval),
        keepalive_count: args.keepalive_count,
    };
    rpc::serve(driver, config, shutdown_signal())
        .await
        .context("cannot serve")?;
    tracing::info!("stopped; running domains keep running");
    Ok(())
}

/// Paths are stored in QEMU command lines and live state, so they must not
/// depend on the directory the daemon was started from.
fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("bad path {}", path.display()))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
