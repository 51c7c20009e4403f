//! Every option of the daemon, from the command line and from the
//! configuration file (`--config FILE`), the command line winning; then
//! the defaults.
//!
//! An option `--some-name` is the key `some_name` in the file, except the
//! repeatable `--tls-allowed-dn`, which is libvirtd's list
//! `tls_allowed_dn_list`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use clap::Parser;

use super::conf_file::{self, Value};

/// libvirtd's standard sockets, which every libvirt client tries first.
pub const LIBVIRT_SOCK: &str = "/run/libvirt/libvirt-sock";
pub const LIBVIRT_SOCK_RO: &str = "/run/libvirt/libvirt-sock-ro";
const OWN_SOCK: &str = "/run/virtbackupd/libvirt-sock";
const OWN_SOCK_RO: &str = "/run/virtbackupd/libvirt-sock-ro";
/// Where libvirt's own daemons live; `libvirt_sockets = "auto"` leaves
/// the standard sockets to them when they are installed.
const DEFAULT_CRL: &str = "/etc/pki/CA/cacrl.pem";
const LIBVIRT_DAEMONS: [&str; 2] = ["/usr/sbin/libvirtd", "/usr/sbin/virtqemud"];

/// A daemon that speaks libvirt's RPC protocol for backups, checkpoints
/// and snapshots, and carries the calls out on QEMU over QMP.
///
/// Every option can also be set in the configuration file given with
/// --config, as `option_name = value` (strings in double quotes, numbers
/// bare, lists in [ ]); the command line wins over the file.
#[derive(Debug, Default, Parser)]
#[command(version, max_term_width = 100)]
pub struct Args {
    /// Configuration file in libvirtd.conf's syntax. None is read unless
    /// this is given; the system service passes
    /// /etc/virtbackupd/virtbackupd.conf.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve libvirt's standard sockets /run/libvirt/libvirt-sock and
    /// libvirt-sock-ro, which `virsh -c qemu:///system`, qemu+ssh:// and
    /// every tool's default URI reach: yes, no, or auto (yes unless
    /// libvirtd or virtqemud is installed). --listen and --listen-ro win
    /// over it. [default: auto]
    #[arg(long, value_name = "auto|yes|no", value_parser = parse_libvirt_sockets)]
    pub libvirt_sockets: Option<LibvirtSockets>,
    /// Read-write socket (mode 0700). [default: /run/libvirt/libvirt-sock
    /// or /run/virtbackupd/libvirt-sock, see --libvirt-sockets]
    #[arg(long, value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// Read-only socket (mode 0777): every call that changes something is
    /// refused. [default: the --listen socket's directory, libvirt-sock-ro]
    #[arg(long, value_name = "PATH")]
    pub listen_ro: Option<PathBuf>,
    /// Serve libvirt's TLS transport (qemu+tls://HOST/system) on ADDR,
    /// port 16514 unless given. Clients need a certificate signed by
    /// --tls-ca. [default: off]
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_tls_addr)]
    pub listen_tls: Option<SocketAddr>,
    /// CA certificate(s) that client certificates must be signed by.
    /// [default: /etc/pki/CA/cacert.pem]
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The server's certificate (its name must match the host name in the
    /// clients' URI). [default: /etc/pki/libvirt/servercert.pem]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The server's private key.
    /// [default: /etc/pki/libvirt/private/serverkey.pem]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The CA's certificate revocation list: clients whose certificate it
    /// names are refused. [default: /etc/pki/CA/cacrl.pem if it exists]
    #[arg(long, value_name = "FILE")]
    pub tls_crl: Option<PathBuf>,
    /// Only TLS clients whose certificate DN matches PATTERN get in
    /// (libvirtd's tls_allowed_dn_list; `*` matches any text, e.g.
    /// "C=GB,O=Example,CN=*"; see virt-pki-query-dn). Repeatable; in the
    /// file the list `tls_allowed_dn_list`. [default: any CA-signed client]
    #[arg(long, value_name = "PATTERN")]
    pub tls_allowed_dn: Vec<String>,
    /// Whether the file set `tls_allowed_dn_list`: an empty list there
    /// means, as in libvirtd, that no client gets in.
    #[arg(skip)]
    pub tls_allowed_dn_set: bool,
    /// Serve plain, unencrypted qemu+tcp:// on ADDR (port 16509 unless
    /// given). Needs --auth-tcp none: anyone who reaches the port has full
    /// control. [default: off]
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_tcp_addr)]
    pub listen_tcp: Option<SocketAddr>,
    /// Authentication on the plain TCP port. Only "none" exists (libvirtd's
    /// default "sasl" is not supported), and it must be given explicitly.
    #[arg(long, value_name = "none", value_parser = parse_auth_tcp)]
    pub auth_tcp: Option<AuthTcp>,
    /// Persistent state: domain definitions and metadata.
    /// [default: /var/lib/virtbackupd]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Live state of running domains (QMP sockets, pid files).
    /// [default: /run/virtbackupd]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The emulator whose version the daemon reports.
    /// [default: /usr/bin/qemu-system-x86_64]
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// Seconds of silence before pinging a client that asked for keepalive
    /// (1-3600). [default: 5]
    #[arg(long, value_name = "SECS", value_parser = parse_keepalive_interval)]
    pub keepalive_interval: Option<u64>,
    /// Unanswered pings after which such a client is disconnected (1-100).
    /// [default: 5]
    #[arg(long, value_name = "N", value_parser = parse_keepalive_count)]
    pub keepalive_count: Option<u32>,
    /// Ports for a pull backup's TCP NBD server that names none.
    /// [default: 10809-10872]
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_port_range)]
    pub nbd_port_range: Option<RangeInclusive<u16>>,
    /// Octal mode of a pull backup's unix NBD socket (0600: only the
    /// daemon's user can connect; 0660 lets its group in too).
    /// [default: 0600]
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub nbd_socket_mode: Option<u32>,
    /// Directory with ca-cert.pem, server-cert.pem and server-key.pem for
    /// pull backups whose NBD server asks for tls='yes' (libvirt's
    /// backup_tls_x509_cert_dir). [default: /etc/pki/qemu]
    #[arg(long, value_name = "DIR")]
    pub backup_tls_dir: Option<PathBuf>,
    /// Threads that run calls and QMP sessions (1-256; files and qemu-img
    /// have a pool of their own). One keeps the CPU per call lowest: a call
    /// is answered by the thread that read it, with no hand-over; more help
    /// only where calls themselves keep a thread busy. [default: 1]
    #[arg(long, value_name = "N", value_parser = parse_worker_threads)]
    pub worker_threads: Option<u16>,
    /// Nice value of the daemon's own threads (-20 to 0), so that a call
    /// waits less for a core while QEMUs copy backups; the QEMUs and
    /// qemu-img it starts stay at the default 0. Lowering it needs root
    /// (CAP_SYS_NICE). [default: 0, as libvirtd]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_nice)]
    pub nice: Option<i8>,
    /// MiB/s every new push backup copies at, per disk (0: unlimited, as
    /// libvirt; `virsh blockjob DOM DISK --bandwidth N` changes one disk's
    /// while the backup runs). [default: 0]
    #[arg(long, value_name = "MIB", value_parser = parse_backup_bandwidth)]
    pub backup_bandwidth: Option<u64>,
    /// Seconds a guest write may wait for a push backup's copy-before-write
    /// before the backup is given up instead (0: the guest waits as long as
    /// it takes, as with libvirt). With a timeout the old data goes to a
    /// local scratch image next to the disk first. [default: 0]
    #[arg(long, value_name = "SECONDS", value_parser = parse_backup_cbw_timeout)]
    pub backup_cbw_timeout: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibvirtSockets {
    Auto,
    Yes,
    No,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthTcp {
    None,
}

/// Everything resolved: what the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub listen: PathBuf,
    pub listen_ro: PathBuf,
    pub listen_tls: Option<SocketAddr>,
    pub tls_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub tls_crl: Option<PathBuf>,
    /// `None`: no allow-list, any CA-signed client.
    pub tls_allowed_dn: Option<Vec<String>>,
    pub listen_tcp: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub qemu: PathBuf,
    pub keepalive_interval: u64,
    pub keepalive_count: u32,
    pub nbd_port_range: RangeInclusive<u16>,
    pub nbd_socket_mode: u32,
    pub backup_tls_dir: PathBuf,
    pub worker_threads: u16,
    pub nice: i8,
    /// In MiB/s; 0 is unlimited.
    pub backup_bandwidth: u64,
    /// In seconds; 0 is off.
    pub backup_cbw_timeout: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("cannot read {}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The line where the mistake is, as "FILE:LINE: reason".
    #[error("{}:{line}: {reason}", file.display())]
    File {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Options {
    /// Reads the file `args` names, if any, and resolves every option.
    /// Blocking: call it before the runtime starts.
    pub fn load(args: Args) -> Result<Options, OptionsError> {
        let from_file = match &args.config {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| OptionsError::Read {
                    file: file.clone(),
                    source,
                })?;
                read_file(&text).map_err(|(line, reason)| OptionsError::File {
                    file: file.clone(),
                    line,
                    reason,
                })?
            }
            None => Args::default(),
        };
        let libvirt_installed = LIBVIRT_DAEMONS.iter().any(|p| Path::new(p).exists());
        let mut options = resolve(args, from_file, libvirt_installed)?;
        // As libvirtd: the default list is used when it is there.
        if options.tls_crl.is_none() && Path::new(DEFAULT_CRL).exists() {
            options.tls_crl = Some(DEFAULT_CRL.into());
        }
        Ok(options)
    }
}

/// The file's settings as if they had been given on the command line, or
/// the line and reason of the first mistake.
pub fn read_file(text: &str) -> Result<Args, (usize, String)> {
    let entries = conf_file::parse(text).map_err(|e| (e.line, e.reason))?;
    let mut args = Args::default();
    for entry in entries {
        set(&mut args, &entry.key, entry.value)
            .map_err(|reason| (entry.line, format!("{}: {reason}", entry.key)))?;
    }
    Ok(args)
}

fn set(args: &mut Args, key: &str, value: Value) -> Result<(), String> {
    match key {
        "libvirt_sockets" => args.libvirt_sockets = Some(parse_libvirt_sockets(&string(value)?)?),
        "listen" => args.listen = Some(path(value)?),
        "listen_ro" => args.listen_ro = Some(path(value)?),
        "listen_tls" => args.listen_tls = Some(parse_tls_addr(&string(value)?)?),
        "tls_ca" => args.tls_ca = Some(path(value)?),
        "tls_cert" => args.tls_cert = Some(path(value)?),
        "tls_key" => args.tls_key = Some(path(value)?),
        "tls_crl" => args.tls_crl = Some(path(value)?),
        "tls_allowed_dn_list" => match value {
            Value::List(items) => {
                args.tls_allowed_dn = items;
                args.tls_allowed_dn_set = true;
            }
            _ => return Err("expected a list of strings".into()),
        },
        "listen_tcp" => args.listen_tcp = Some(parse_tcp_addr(&string(value)?)?),
        "auth_tcp" => args.auth_tcp = Some(parse_auth_tcp(&string(value)?)?),
        "state_dir" => args.state_dir = Some(path(value)?),
        "run_dir" => args.run_dir = Some(path(value)?),
        "qemu" => args.qemu = Some(path(value)?),
        "keepalive_interval" => {
            args.keepalive_interval = Some(parse_keepalive_interval(&number(value)?)?)
        }
        "keepalive_count" => args.keepalive_count = Some(parse_keepalive_count(&number(value)?)?),
        "nbd_port_range" => args.nbd_port_range = Some(parse_port_range(&string(value)?)?),
        "nbd_socket_mode" => args.nbd_socket_mode = Some(parse_mode(&string(value)?)?),
        "backup_tls_dir" => args.backup_tls_dir = Some(path(value)?),
        "backup_bandwidth" => {
            args.backup_bandwidth = Some(parse_backup_bandwidth(&number(value)?)?)
        }
        "backup_cbw_timeout" => {
            args.backup_cbw_timeout = Some(parse_backup_cbw_timeout(&number(value)?)?)
        }
        "worker_threads" => args.worker_threads = Some(parse_worker_threads(&number(value)?)?),
        "nice" => args.nice = Some(parse_nice(&number(value)?)?),
        _ => return Err("unknown key".into()),
    }
    Ok(())
}

fn string(value: Value) -> Result<String, String> {
    match value {
        Value::Str(s) => Ok(s),
        _ => Err("expected a string in double quotes".into()),
    }
}

fn number(value: Value) -> Result<String, String> {
    match value {
        Value::Int(n) => Ok(n.to_string()),
        _ => Err("expected a number".into()),
    }
}

fn path(value: Value) -> Result<PathBuf, String> {
    let text = string(value)?;
    if text.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(text))
}

/// Command line over file over default.
fn resolve(cli: Args, file: Args, libvirt_installed: bool) -> Result<Options, OptionsError> {
    let sockets = cli
        .libvirt_sockets
        .or(file.libvirt_sockets)
        .unwrap_or(LibvirtSockets::Auto);
    let standard = match sockets {
        LibvirtSockets::Yes => true,
        LibvirtSockets::No => false,
        LibvirtSockets::Auto => !libvirt_installed,
    };
    let (sock, sock_ro) = if standard {
        (LIBVIRT_SOCK, LIBVIRT_SOCK_RO)
    } else {
        (OWN_SOCK, OWN_SOCK_RO)
    };
    let listen_tcp = cli.listen_tcp.or(file.listen_tcp);
    let auth_tcp = cli.auth_tcp.or(file.auth_tcp);
    if listen_tcp.is_some() && auth_tcp != Some(AuthTcp::None) {
        return Err(OptionsError::Invalid(
            "plain TCP (listen_tcp) needs auth_tcp = \"none\" given explicitly: \
             it has no authentication and no encryption (SASL is not supported); \
             prefer listen_tls"
                .into(),
        ));
    }
    let tls_allowed_dn = if !cli.tls_allowed_dn.is_empty() {
        Some(cli.tls_allowed_dn)
    } else if file.tls_allowed_dn_set {
        Some(file.tls_allowed_dn)
    } else {
        None
    };
    let defaults = crate::rpc::TlsFiles::libvirt_defaults();
    Ok(Options {
        listen: cli.listen.or(file.listen).unwrap_or_else(|| sock.into()),
        listen_ro: cli
            .listen_ro
            .or(file.listen_ro)
            .unwrap_or_else(|| sock_ro.into()),
        listen_tls: cli.listen_tls.or(file.listen_tls),
        tls_ca: cli.tls_ca.or(file.tls_ca).unwrap_or(defaults.ca),
        tls_cert: cli.tls_cert.or(file.tls_cert).unwrap_or(defaults.cert),
        tls_key: cli.tls_key.or(file.tls_key).unwrap_or(defaults.key),
        tls_crl: cli.tls_crl.or(file.tls_crl),
        tls_allowed_dn,
        listen_tcp,
        state_dir: cli
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| "/var/lib/virtbackupd".into()),
        run_dir: cli
            .run_dir
            .or(file.run_dir)
            .unwrap_or_else(|| "/run/virtbackupd".into()),
        qemu: cli
            .qemu
            .or(file.qemu)
            .unwrap_or_else(|| "/usr/bin/qemu-system-x86_64".into()),
        keepalive_interval: cli
            .keepalive_interval
            .or(file.keepalive_interval)
            .unwrap_or(5),
        keepalive_count: cli.keepalive_count.or(file.keepalive_count).unwrap_or(5),
        nbd_port_range: cli
            .nbd_port_range
            .or(file.nbd_port_range)
            .unwrap_or(10809..=10872),
        nbd_socket_mode: cli
            .nbd_socket_mode
            .or(file.nbd_socket_mode)
            .unwrap_or(0o600),
        backup_tls_dir: cli
            .backup_tls_dir
            .or(file.backup_tls_dir)
            .unwrap_or_else(|| "/etc/pki/qemu".into()),
        worker_threads: cli.worker_threads.or(file.worker_threads).unwrap_or(1),
        nice: cli.nice.or(file.nice).unwrap_or(0),
        backup_bandwidth: cli.backup_bandwidth.or(file.backup_bandwidth).unwrap_or(0),
        backup_cbw_timeout: cli
            .backup_cbw_timeout
            .or(file.backup_cbw_timeout)
            .unwrap_or(0),
    })
}

fn parse_libvirt_sockets(text: &str) -> Result<LibvirtSockets, String> {
    match text {
        "auto" => Ok(LibvirtSockets::Auto),
        "yes" => Ok(LibvirtSockets::Yes),
        "no" => Ok(LibvirtSockets::No),
        _ => Err(format!("'{text}' is not auto, yes or no")),
    }
}

fn parse_auth_tcp(text: &str) -> Result<AuthTcp, String> {
    match text {
        "none" => Ok(AuthTcp::None),
        "sasl" | "polkit" => Err(format!("'{text}' is not supported; only \"none\" is")),
        _ => Err(format!("'{text}' is not an authentication scheme")),
    }
}

fn parse_tls_addr(text: &str) -> Result<SocketAddr, String> {
    parse_addr(text, 16514)
}

fn parse_tcp_addr(text: &str) -> Result<SocketAddr, String> {
    parse_addr(text, 16509)
}

/// `ADDR`, `ADDR:PORT`, `[V6]:PORT` or a host name with or without a port.
fn parse_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let with_port = match text.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => text.to_string(),
        _ => format!("{text}:{default_port}"),
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("'{text}' is not an address (ADDR or ADDR:PORT)"))
}

fn parse_keepalive_interval(text: &str) -> Result<u64, String> {
    bounded(text, 1, 3600)
}

fn parse_keepalive_count(text: &str) -> Result<u32, String> {
    bounded(text, 1, 100).map(|n| n as u32)
}

/// MiB/s, bounded as libvirt bounds a bandwidth in MiB/s: the bytes must
/// fit QEMU's signed 64-bit speed.
fn parse_backup_bandwidth(text: &str) -> Result<u64, String> {
    bounded(text, 0, (i64::MAX as u64) >> 20)
}

/// Seconds, as QEMU's `cbw-timeout` (a uint32) takes them.
fn parse_backup_cbw_timeout(text: &str) -> Result<u32, String> {
    bounded(text, 0, u64::from(u32::MAX)).map(|n| n as u32)
}

fn parse_worker_threads(text: &str) -> Result<u16, String> {
    bounded(text, 1, 256).map(|n| n as u16)
}

/// Raising it above 0 would only slow the daemon; below -20 the kernel
/// has nothing.
fn parse_nice(text: &str) -> Result<i8, String> {
    match text.parse::<i8>() {
        Ok(n) if (-20..=0).contains(&n) => Ok(n),
        _ => Err(format!("'{text}' is not a number from -20 to 0")),
    }
}

fn bounded(text: &str, min: u64, max: u64) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{text}' is not a number from {min} to {max}")),
    }
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("virtbackupd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let file = read_file(
            "listen = \"/f/sock\"\nkeepalive_count = 9\nlisten_tls = \"127.0.0.1\"\n\
             tls_allowed_dn_list = [\"CN=a\"]\n",
        )
        .unwrap();
        let opts = resolve(cli(&["--listen", "/c/sock"]), file, true).unwrap();
        assert_eq!(opts.listen, PathBuf::from("/c/sock"));
        assert_eq!(opts.keepalive_count, 9);
        assert_eq!(opts.listen_tls, Some("127.0.0.1:16514".parse().unwrap()));
        assert_eq!(opts.tls_allowed_dn, Some(vec!["CN=a".to_string()]));
        assert_eq!(opts.listen_ro, PathBuf::from(OWN_SOCK_RO));
    }

    #[test]
    fn backup_bandwidth_and_worker_threads_from_either_place() {
        let file = read_file("backup_bandwidth = 40\nworker_threads = 2\n").unwrap();
        let opts = resolve(cli(&["--backup-bandwidth", "7"]), file, true).unwrap();
        assert_eq!((opts.backup_bandwidth, opts.worker_threads), (7, 2));
        let opts = resolve(cli(&[]), read_file("").unwrap(), true).unwrap();
        assert_eq!((opts.backup_bandwidth, opts.worker_threads), (0, 1));
        let too_fast = format!("backup_bandwidth = {}\n", (i64::MAX as u64 >> 20) + 1);
        let (line, reason) = read_file(&too_fast).unwrap_err();
        assert_eq!(line, 1);
        assert!(reason.starts_with("backup_bandwidth: "), "{reason}");
    }

    #[test]
    fn nice_from_either_place_and_never_above_zero() {
        let file = read_file("nice = -5\n").unwrap();
        assert_eq!(resolve(cli(&[]), file, true).unwrap().nice, -5);
        let file = read_file("nice = -5\n").unwrap();
        let opts = resolve(cli(&["--nice", "-12"]), file, true).unwrap();
        assert_eq!(opts.nice, -12);
        let opts = resolve(cli(&[]), read_file("").unwrap(), true).unwrap();
        assert_eq!(opts.nice, 0);
        for bad in ["nice = 5\n", "nice = -21\n"] {
            let (line, reason) = read_file(bad).unwrap_err();
            assert_eq!(line, 1);
            assert!(reason.starts_with("nice: "), "{reason}");
        }
        assert!(Args::try_parse_from(["virtbackupd", "--nice", "3"]).is_err());
    }

    #[test]
    fn backup_cbw_timeout_from_either_place() {
        let file = || read_file("backup_cbw_timeout = 30\n").unwrap();
        let opts = resolve(cli(&[]), file(), true).unwrap();
        assert_eq!(opts.backup_cbw_timeout, 30);
        let opts = resolve(cli(&["--backup-cbw-timeout", "2"]), file(), true).unwrap();
        assert_eq!(opts.backup_cbw_timeout, 2);
        let opts = resolve(cli(&[]), read_file("").unwrap(), true).unwrap();
        assert_eq!(opts.backup_cbw_timeout, 0);
        let (line, reason) = read_file("backup_cbw_timeout = 4294967296\n").unwrap_err();
        assert_eq!(line, 1);
        assert!(reason.starts_with("backup_cbw_timeout: "), "{reason}");
    }

    #[test]
    fn an_empty_dn_list_lets_nobody_in_as_in_libvirtd() {
        let file = read_file("tls_allowed_dn_list = []\n").unwrap();
        let opts = resolve(cli(&[]), file, true).unwrap();
        assert_eq!(opts.tls_allowed_dn, Some(vec![]));
        let opts = resolve(cli(&[]), Args::default(), true).unwrap();
        assert_eq!(opts.tls_allowed_dn, None);
    }

    #[test]
    fn standard_sockets_unless_libvirt_is_installed() {
        let opts = resolve(cli(&[]), Args::default(), false).unwrap();
        assert_eq!(opts.listen, PathBuf::from(LIBVIRT_SOCK));
        assert_eq!(opts.listen_ro, PathBuf::from(LIBVIRT_SOCK_RO));
        let opts = resolve(cli(&[]), Args::default(), true).unwrap();
        assert_eq!(opts.listen, PathBuf::from(OWN_SOCK));
        let opts = resolve(cli(&["--libvirt-sockets", "yes"]), Args::default(), true).unwrap();
        assert_eq!(opts.listen, PathBuf::from(LIBVIRT_SOCK));
    }

    #[test]
    fn every_mistake_names_its_line_and_reason() {
        let err = |text: &str| read_file(text).unwrap_err();
        assert_eq!(
            err("# c\nlisten_tsl = \"x\"\n"),
            (2, "listen_tsl: unknown key".into())
        );
        assert_eq!(
            err("keepalive_count = 0\n"),
            (
                1,
                "keepalive_count: '0' is not a number from 1 to 100".into()
            )
        );
        assert_eq!(
            err("\nkeepalive_count = \"5\"\n"),
            (2, "keepalive_count: expected a number".into())
        );
        assert_eq!(
            err("auth_tcp = \"sasl\"\n"),
            (
                1,
                "auth_tcp: 'sasl' is not supported; only \"none\" is".into()
            )
        );
        assert_eq!(err("nbd_socket_mode = \"999\"\n").0, 1);
    }

    #[test]
    fn plain_tcp_needs_auth_none() {
        assert!(resolve(cli(&["--listen-tcp", "127.0.0.1"]), Args::default(), true).is_err());
        let opts = resolve(
            cli(&["--listen-tcp", "127.0.0.1", "--auth-tcp", "none"]),
            Args::default(),
            true,
        )
        .unwrap();
        assert_eq!(opts.listen_tcp, Some("127.0.0.1:16509".parse().unwrap()));
    }

    #[test]
    fn the_shipped_configuration_file_is_valid_commented_or_not() {
        let text = include_str!("../../packaging/virtbackupd.conf");
        assert!(read_file(text).is_ok());
        // Every setting it shows, switched on.
        let on: Vec<&str> = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => l,
            })
            .collect();
        let args = read_file(&on.join("\n")).unwrap();
        let opts = resolve(Args::default(), args, false).unwrap();
        assert_eq!(opts.listen_tls, Some("0.0.0.0:16514".parse().unwrap()));
        assert_eq!(opts.listen_tcp, Some("127.0.0.1:16509".parse().unwrap()));
        assert_eq!(
            opts.tls_allowed_dn,
            Some(vec!["C=GB,O=Example,CN=*".to_string()])
        );
        assert_eq!(opts.backup_tls_dir, PathBuf::from("/etc/pki/qemu"));
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_tls_addr("[::1]:5").unwrap(),
            "[::1]:5".parse().unwrap()
        );
        assert_eq!(
            parse_tls_addr("::1").unwrap(),
            "[::1]:16514".parse().unwrap()
        );
        assert_eq!(
            parse_tls_addr("0.0.0.0:0").unwrap(),
            "0.0.0.0:0".parse().unwrap()
        );
    }
}
