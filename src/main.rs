//! Command line and start-up only.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use virtbackupd::driver::{Driver, DriverConfig};
use virtbackupd::rpc::{self, ListenConfig, Listeners, ServerConfig, TlsFiles};
use virtbackupd::service::{notify, priority, Args, Options};

fn main() -> ExitCode {
    // The journal (or a log file) gets plain text; colours only on a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    // Options and the configuration file are read before the runtime
    // starts: it is blocking work, and a mistake must stop the daemon
    // before it touches anything.
    let options = match Options::load(Args::parse()) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("virtbackupd: {}", chain(&err));
            return ExitCode::from(2);
        }
    };
    // The main thread runs the accept loop; each thread the runtime starts
    // sets its own, since reset-on-fork gives new threads the default.
    if let Err(err) = priority::apply(options.nice) {
        eprintln!("virtbackupd: cannot set nice {}: {err}", options.nice);
        return ExitCode::FAILURE;
    }
    let nice = options.nice;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(options.worker_threads))
        .on_thread_start(move || {
            if let Err(err) = priority::apply(nice) {
                tracing::warn!(%err, nice, "cannot set this thread's nice value");
            }
        })
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("virtbackupd: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{}", chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let listen = ListenConfig {
        listen: absolute(&options.listen)?,
        listen_ro: Some(absolute(&options.listen_ro)?),
        listen_tls: options.listen_tls.map(|addr| {
            (
                addr,
                TlsFiles {
                    ca: options.tls_ca.clone(),
                    cert: options.tls_cert.clone(),
                    key: options.tls_key.clone(),
                    crl: options.tls_crl.clone(),
                    allowed_dns: options.tls_allowed_dn.clone(),
                },
            )
        }),
        listen_tcp: options.listen_tcp,
    };
    // The sockets before the domains: if another daemon owns them, this
    // one must not take its QEMUs back.
    let listeners = Listeners::bind(&listen).await?;
    let driver = Driver::open(DriverConfig {
        nbd_ports: options.nbd_port_range,
        nbd_socket_mode: options.nbd_socket_mode,
        backup_tls_dir: options.backup_tls_dir,
        backup_speed: (options.backup_bandwidth > 0).then_some(options.backup_bandwidth << 20),
        backup_cbw_timeout: (options.backup_cbw_timeout > 0).then_some(options.backup_cbw_timeout),
        ..DriverConfig::new(
            absolute(&options.state_dir)?,
            absolute(&options.run_dir)?,
            options.qemu,
        )
    })
    .await
    .context("cannot start the driver")?;
    let config = ServerConfig {
        keepalive_interval: Duration::from_secs(options.keepalive_interval),
        keepalive_count: options.keepalive_count,
    };
    if let Err(err) = notify::ready() {
        tracing::warn!(%err, "cannot tell systemd the daemon is ready");
    }
    rpc::serve(driver, listeners, config, shutdown_signal()).await;
    let _ = notify::stopping();
    tracing::info!("stopped; running domains keep running");
    Ok(())
}

/// An error and its causes on one line: "cannot listen on X: Address in use".
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
