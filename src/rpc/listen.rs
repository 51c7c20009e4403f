//! The sockets clients reach the daemon on: unix sockets (read-write and
//! read-only, at libvirt's standard paths or our own), libvirt's TLS port
//! and, when asked for explicitly, plain TCP.
//!
//! Everything that can fail is done in [`Listeners::bind`], before the
//! daemon reports itself ready, so a bad certificate or a socket that
//! libvirtd owns stops the daemon at start with a clear message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;

use super::server::{serve_connection, ServerShared};
use super::tls::{self, TlsFiles};

/// How long a TLS client may take to finish its handshake. It runs in the
/// connection's own task, so a stalled one holds up nobody meanwhile; this
/// only bounds what it costs.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{} is served by another daemon (libvirtd?); stop it or choose other sockets", path.display())]
    Owned { path: PathBuf },
    #[error("cannot listen on {what}")]
    Bind {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {}: {reason}", file.display())]
    Tls { file: PathBuf, reason: String },
}

/// Where to listen.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub listen: PathBuf,
    pub listen_ro: Option<PathBuf>,
    /// libvirt's TLS port (qemu+tls://), with its certificates.
    pub listen_tls: Option<(SocketAddr, TlsFiles)>,
    /// Plain TCP (qemu+tcp://) with no authentication at all: the caller
    /// decides whether that is wanted.
    pub listen_tcp: Option<SocketAddr>,
}

/// The bound sockets, ready to accept.
pub struct Listeners {
    rw: (PathBuf, UnixListener),
    ro: Option<(PathBuf, UnixListener)>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    tcp: Option<TcpListener>,
}

impl Listeners {
    /// Binds every socket of `config`, or fails without serving any.
    pub async fn bind(config: &ListenConfig) -> Result<Listeners, ListenError> {
        // The certificates first: a mistake there leaves no socket behind.
        let acceptor = match &config.listen_tls {
            Some((_, files)) => Some(tls::acceptor(files)?),
            None => None,
        };
        let rw = (
            config.listen.clone(),
            bind_unix(&config.listen, 0o700).await?,
        );
        let ro = match &config.listen_ro {
            Some(path) => match bind_unix(path, 0o777).await {
                Ok(listener) => Some((path.clone(), listener)),
                Err(err) => return Err(forget(&[&rw.0], err).await),
            },
            None => None,
        };
        let ours: Vec<&Path> = std::iter::once(rw.0.as_path())
            .chain(ro.as_ref().map(|(p, _)| p.as_path()))
            .collect();
        let tls = match (&config.listen_tls, acceptor) {
            (Some((addr, _)), Some(acceptor)) => match bind_tcp(*addr).await {
                Ok(listener) => Some((listener, acceptor)),
                Err(err) => return Err(forget(&ours, err).await),
            },
            _ => None,
        };
        let tcp = match config.listen_tcp {
            Some(addr) => match bind_tcp(addr).await {
                Ok(listener) => Some(listener),
                Err(err) => return Err(forget(&ours, err).await),
            },
            None => None,
        };
        Ok(Listeners { rw, ro, tls, tcp })
    }

    /// Accepts on every socket until `shutdown` resolves, then removes the
    /// unix socket files.
    pub(super) async fn accept_all(
        self,
        shared: Arc<ServerShared>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Listeners { rw, ro, tls, tcp } = self;
        let mut paths = vec![rw.0.clone()];
        tracing::info!(listen = %rw.0.display(), "serving");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(accept_unix(shared.clone(), rw.1, false));
        if let Some((path, listener)) = ro {
            tracing::info!(listen_ro = %path.display(), "serving read-only");
            paths.push(path);
            tasks.spawn(accept_unix(shared.clone(), listener, true));
        }
        if let Some((listener, acceptor)) = tls {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "serving TLS");
            }
            tasks.spawn(accept_tcp(shared.clone(), listener, Some(acceptor)));
        }
        if let Some(listener) = tcp {
            if let Ok(addr) = listener.local_addr() {
                tracing::warn!(%addr, "serving plain TCP without authentication");
            }
            tasks.spawn(accept_tcp(shared.clone(), listener, None));
        }
        shutdown.await;
        tasks.abort_all();
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A start that fails leaves none of the socket files it made behind.
async fn forget(paths: &[&Path], err: ListenError) -> ListenError {
    for path in paths {
        let _ = tokio::fs::remove_file(path).await;
    }
    err
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind {
            what: addr.to_string(),
            source,
        })
}

async fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, ListenError> {
    let err = |source| ListenError::Bind {
        what: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(err)?;
    }
    // A socket file left by a previous run would make bind fail, but one
    // that something answers on belongs to a live daemon (libvirtd, or a
    // second virtbackupd) and must not be taken from it. Anything that is
    // not a socket is not ours to remove.
    if let Ok(meta) = tokio::fs::symlink_metadata(path).await {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(ListenError::Owned {
                    path: path.to_path_buf(),
                });
            }
            tokio::fs::remove_file(path).await.map_err(err)?;
        }
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(err)?;
    Ok(listener)
}

/// Out of descriptors and the like: back off instead of spinning.
async fn accept_failed(err: std::io::Error) {
    tracing::warn!(%err, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn accept_unix(shared: Arc<ServerShared>, listener: UnixListener, readonly: bool) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        let Some(permit) = shared.admit() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(shared, stream, readonly).await;
            drop(permit);
        });
    }
}

/// TCP clients are read-write, as libvirtd's: with TLS they proved who
/// they are with a certificate; plain TCP is the administrator's choice.
async fn accept_tcp(shared: Arc<ServerShared>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        let Some(permit) = shared.admit() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(shared, stream, false).await,
                Some(acceptor) => {
                    if let Some(stream) = handshake(&acceptor, stream, peer).await {
                        serve_connection(shared, stream, false).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// The TLS handshake (which checks the client's certificate and DN), then
/// libvirt's confirmation: one byte 1 inside the TLS stream, which the
/// client waits for before its first call. `None` when the client is
/// refused or too slow; either is logged.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = acceptor.accept(stream).into_fallible();
    let mut stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err((err, tcp))) => {
            tracing::info!(%peer, %err, "TLS handshake refused");
            linger(tcp).await;
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let confirm = async {
        stream.write_all(&[1]).await?;
        stream.flush().await
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, confirm).await {
        Ok(Ok(())) => Some(stream),
        _ => None,
    }
}

/// Closes a refused client's connection gently. The client sent its last
/// handshake flight in one go and rustls stopped reading at the bad
/// certificate: closing with that unread would reset the connection,
/// which the client may see before our alert (or die of SIGPIPE writing
/// into). So: end our side, and read what is left, for a moment.
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}
