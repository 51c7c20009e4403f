//! What QEMU is started with: the launch spec the driver fills in, and the
//! command line built from it by a pure function.
//!
//! The command line follows the one libvirt 9.0 builds for the same domain
//! (qemu_command.c; a captured one is in the conf worktree's
//! fixtures/reference/qemu-cmdline.txt), option for option and in the same
//! order, so that `ps` shows what an administrator expects. Deliberate
//! differences:
//!
//! - the monitor socket is given by `path=` (libvirt binds it itself and
//!   passes `fd=`; without `unsafe` we cannot clear close-on-exec in the
//!   child only), and QEMU writes `-pidfile` itself;
//! - no `-no-shutdown`: when the guest powers off, QEMU exits on its own, so
//!   "process gone" always means "domain shut off", even while the daemon
//!   is down; libvirt instead kills the stopped QEMU on the SHUTDOWN event;
//! - no master-key secret object, USB controller or `-sandbox` (nothing here
//!   needs them).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};

use super::error::QemuError;
use super::json::JsonObject;

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (`<domain type='qemu'>`).
    Tcg,
    /// Hardware virtualisation (`<domain type='kvm'>`).
    Kvm,
}

/// Where a disk's data lives on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A regular file (`<disk type='file'>`): blockdev driver `file`.
    File,
    /// A block device (`<disk type='block'>`): blockdev driver `host_device`.
    Block,
}

/// The image format of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// qcow2, which can hold persistent dirty bitmaps.
    Qcow2,
    /// Raw.
    Raw,
}

impl DiskFormat {
    /// QEMU's (and qemu-img's) name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// One virtio disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The guest target name, e.g. "vda" (for messages only).
    pub target: String,
    /// Position in the domain XML: device id `virtio-disk<device_index>`
    /// and PCI slot `0x2 + device_index`, as libvirt assigns them.
    pub device_index: usize,
    /// N in the node names `libvirt-N-storage` / `libvirt-N-format`.
    /// libvirt numbers disks from the last one: with two disks, vda is 2
    /// and vdb is 1.
    pub node_index: u32,
    /// The image or device path; must be valid UTF-8 (QEMU takes it in JSON).
    pub source: PathBuf,
    /// File or block device.
    pub source_kind: SourceKind,
    /// Image format.
    pub format: DiskFormat,
    /// Whether the guest may only read it.
    pub readonly: bool,
    /// `bootindex` of the device, if any.
    pub boot_index: Option<u32>,
    /// Whether the qcow2 image names a backing file (an external
    /// snapshot's overlay). With `backing` empty, QEMU then opens the
    /// chain the header names (one the daemon could not write out).
    /// [`start`](super::start) reads both from the image headers itself,
    /// so what a caller sets here counts only for [`build_argv`] alone.
    pub has_backing: bool,
    /// The images below the top, top-down, each with nodes of its own, as
    /// libvirt names every layer of a chain.
    pub backing: Vec<BackingSpec>,
}

/// One image below a disk's top: read-only nodes `libvirt-N-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingSpec {
    /// N of its node names.
    pub node_index: u32,
    pub source: PathBuf,
    pub source_kind: SourceKind,
    pub format: DiskFormat,
}

impl DiskSpec {
    /// The protocol (storage) node name.
    pub fn storage_node(&self) -> String {
        super::node::storage(self.node_index)
    }

    /// The format node name, the one devices, jobs and bitmaps refer to.
    pub fn format_node(&self) -> String {
        super::node::format(self.node_index)
    }

    /// The device id, `virtio-disk<N>`; HMP `qemu-io -d` finds the disk as
    /// `/machine/peripheral/<id>/virtio-backend`.
    pub fn device_id(&self) -> String {
        format!("virtio-disk{}", self.device_index)
    }
}

/// Everything needed to start one domain's QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: uuid::Uuid,
    /// The QEMU binary.
    pub emulator: PathBuf,
    /// Canonical machine type, e.g. "pc-i440fx-7.2".
    pub machine: String,
    /// TCG or KVM.
    pub accel: Accel,
    /// Guest memory in KiB; QEMU gets it in MiB, rounded up.
    pub memory_kib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Whether the domain has `<features><acpi/>`; without it libvirt
    /// passes `-no-acpi` (and `virsh shutdown` then has no effect).
    pub acpi: bool,
    /// Disks, in domain XML order.
    pub disks: Vec<DiskSpec>,
    /// Per-domain directory for the QMP socket, pidfile and log.
    pub run_dir: PathBuf,
}

/// The files QEMU uses in a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    /// The QMP socket QEMU listens on.
    pub monitor: PathBuf,
    /// QEMU's pidfile.
    pub pidfile: PathBuf,
    /// QEMU's stdout and stderr, appended to.
    pub log: PathBuf,
}

impl RunPaths {
    /// The paths inside `run_dir`.
    pub fn new(run_dir: &Path) -> RunPaths {
        RunPaths {
            monitor: run_dir.join("monitor.sock"),
            pidfile: run_dir.join("qemu.pid"),
            log: run_dir.join("qemu.log"),
        }
    }

    /// The `-chardev` argument naming the monitor socket. Also what
    /// reconnect looks for in /proc/PID/cmdline to recognise our QEMU.
    pub fn chardev_arg(&self) -> OsString {
        let mut arg = OsString::from("socket,id=charmonitor,path=");
        arg.push(escape_comma(self.monitor.as_os_str()));
        arg.push(",server=on,wait=off");
        arg
    }
}

/// The highest PCI slot on the i440fx/q35 root bus.
const MAX_PCI_SLOT: usize = 0x1f;

/// The id libvirt gives the default RAM backend of pc machines.
const RAM_ID: &str = "pc.ram";

/// Builds QEMU's arguments (without the binary itself) for `spec`.
pub fn build_argv(spec: &LaunchSpec) -> Result<Vec<OsString>, QemuError> {
    if spec.vcpus == 0 {
        return Err(QemuError::InvalidInput(
            "a domain needs at least one vCPU".into(),
        ));
    }
    if spec.memory_kib == 0 {
        return Err(QemuError::InvalidInput("a domain needs memory".into()));
    }
    check_disks(&spec.disks)?;
    let paths = RunPaths::new(&spec.run_dir);
    let memory_mib = spec.memory_kib.div_ceil(1024);

    let mut argv = Argv::default();
    let mut name = OsString::from("guest=");
    name.push(escape_comma(OsStr::new(&spec.name)));
    name.push(",debug-threads=on");
    argv.opt("-name", name);
    argv.flag("-S");
    argv.opt(
        "-machine",
        format!(
            "{},usb=off,dump-guest-core=off,memory-backend={RAM_ID}",
            escape_comma_str(&spec.machine)
        ),
    );
    argv.opt(
        "-accel",
        match spec.accel {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        },
    );
    argv.opt("-cpu", "qemu64");
    argv.opt("-m", memory_mib.to_string());
    argv.opt(
        "-object",
        JsonObject::new()
            .str("qom-type", "memory-backend-ram")
            .str("id", RAM_ID)
            .uint("size", memory_mib * 1024 * 1024)
            .finish(),
    );
    argv.opt("-overcommit", "mem-lock=off");
    argv.opt(
        "-smp",
        format!("{0},sockets={0},cores=1,threads=1", spec.vcpus),
    );
    argv.opt("-uuid", spec.uuid.hyphenated().to_string());
    argv.opt("-display", "none");
    argv.flag("-no-user-config");
    argv.flag("-nodefaults");
    argv.opt("-chardev", paths.chardev_arg());
    argv.opt("-mon", "chardev=charmonitor,id=monitor,mode=control");
    argv.opt("-rtc", "base=utc");
    if !spec.acpi {
        argv.flag("-no-acpi");
    }
    argv.opt("-boot", "strict=on");
    for disk in &spec.disks {
        disk_args(&mut argv, disk)?;
    }
    argv.opt(
        "-audiodev",
        JsonObject::new()
            .str("id", "audio1")
            .str("driver", "none")
            .finish(),
    );
    // libvirt's default memballoon takes the slot after the disks.
    let balloon_slot = 2 + spec
        .disks
        .iter()
        .map(|d| d.device_index + 1)
        .max()
        .unwrap_or(0);
    argv.opt(
        "-device",
        JsonObject::new()
            .str("driver", "virtio-balloon-pci")
            .str("id", "balloon0")
            .str("bus", "pci.0")
            .str("addr", &format!("{balloon_slot:#x}"))
            .finish(),
    );
    argv.opt("-pidfile", paths.pidfile.into_os_string());
    argv.opt("-msg", "timestamp=on");
    Ok(argv.0)
}

/// The environment QEMU runs with (it starts from an empty one, as with
/// libvirt): `path` is the daemon's own PATH, if it has one.
pub fn environment(run_dir: &Path, path: Option<OsString>) -> Vec<(OsString, OsString)> {
    let path = path.unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".into());
    vec![
        ("LC_ALL".into(), "C".into()),
        ("PATH".into(), path),
        ("HOME".into(), run_dir.into()),
        ("XDG_DATA_HOME".into(), run_dir.join(".local/share").into()),
        ("XDG_CACHE_HOME".into(), run_dir.join(".cache").into()),
        ("XDG_CONFIG_HOME".into(), run_dir.join(".config").into()),
    ]
}

fn check_disks(disks: &[DiskSpec]) -> Result<(), QemuError> {
    for (i, disk) in disks.iter().enumerate() {
        let nodes = |d: &DiskSpec| {
            std::iter::once(d.node_index)
                .chain(d.backing.iter().map(|b| b.node_index))
                .collect::<Vec<_>>()
        };
        let mine = nodes(disk);
        let clash = disks[..i].iter().find(|d| {
            d.device_index == disk.device_index || nodes(d).iter().any(|n| mine.contains(n))
        });
        if let Some(other) = clash {
            return Err(QemuError::InvalidInput(format!(
                "disks '{}' and '{}' share a device or node index",
                other.target, disk.target
            )));
        }
        // The balloon needs the slot after the last disk too.
        if 2 + disk.device_index + 1 > MAX_PCI_SLOT {
            return Err(QemuError::InvalidInput(format!(
                "no PCI slot left for disk '{}'",
                disk.target
            )));
        }
    }
    Ok(())
}

fn disk_args(argv: &mut Argv, disk: &DiskSpec) -> Result<(), QemuError> {
    // libvirt's order: the bottom layer first, each format node naming
    // the one below as its backing.
    let mut below: Option<String> = None;
    for layer in disk.backing.iter().rev() {
        image_args(
            argv,
            &disk.target,
            layer.node_index,
            &layer.source,
            layer.source_kind,
            layer.format,
            true,
            below.take().map_or(Backing::None, Backing::Node),
        )?;
        below = Some(super::node::format(layer.node_index));
    }
    let backing = match below {
        Some(node) => Backing::Node(node),
        // An overlay whose chain could not be written out is opened from
        // its header.
        None if disk.has_backing => Backing::Header,
        None => Backing::None,
    };
    image_args(
        argv,
        &disk.target,
        disk.node_index,
        &disk.source,
        disk.source_kind,
        disk.format,
        disk.readonly,
        backing,
    )?;
    let format = disk.format_node();
    let device = JsonObject::new()
        .str("driver", "virtio-blk-pci")
        .str("bus", "pci.0")
        .str("addr", &format!("{:#x}", 2 + disk.device_index))
        .str("drive", &format)
        .str("id", &disk.device_id());
    let device = match disk.boot_index {
        Some(index) => device.uint("bootindex", u64::from(index)),
        None => device,
    };
    argv.opt("-device", device.finish());
    Ok(())
}

/// What a qcow2 format node says of the image below it.
enum Backing {
    /// `backing: null`: none, or QEMU would open the one in the header
    /// behind our back.
    None,
    /// Left out: QEMU opens what the header names.
    Header,
    /// The format node of the layer below.
    Node(String),
}

/// The storage and format nodes of one image.
#[allow(clippy::too_many_arguments)]
fn image_args(
    argv: &mut Argv,
    target: &str,
    index: u32,
    source: &Path,
    kind: SourceKind,
    format: DiskFormat,
    readonly: bool,
    backing: Backing,
) -> Result<(), QemuError> {
    let source = source.to_str().ok_or_else(|| {
        QemuError::InvalidInput(format!("source path of disk '{target}' is not valid UTF-8"))
    })?;
    let (storage, format_name) = (super::node::storage(index), super::node::format(index));
    // The storage node may open read-only if nothing above needs writes
    // (auto-read-only); the format node says what the guest gets.
    argv.opt(
        "-blockdev",
        JsonObject::new()
            .str(
                "driver",
                match kind {
                    SourceKind::File => "file",
                    SourceKind::Block => "host_device",
                },
            )
            .str("filename", source)
            .str("node-name", &storage)
            .bool("auto-read-only", true)
            .str("discard", "unmap")
            .finish(),
    );
    let node = JsonObject::new()
        .str("node-name", &format_name)
        .bool("read-only", readonly);
    let node = match (format, backing) {
        (DiskFormat::Qcow2, Backing::Header) => node.str("driver", "qcow2").str("file", &storage),
        (DiskFormat::Qcow2, Backing::None) => node
            .str("driver", "qcow2")
            .str("file", &storage)
            .null("backing"),
        (DiskFormat::Qcow2, Backing::Node(below)) => node
            .str("driver", "qcow2")
            .str("file", &storage)
            .str("backing", &below),
        (DiskFormat::Raw, _) => node.str("driver", "raw").str("file", &storage),
    };
    argv.opt("-blockdev", node.finish());
    Ok(())
}

#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn flag(&mut self, flag: &str) {
        self.0.push(flag.into());
    }

    fn opt(&mut self, flag: &str, value: impl Into<OsString>) {
        self.0.push(flag.into());
        self.0.push(value.into());
    }
}

/// QEMU's option parser splits on commas; a literal comma is doubled.
fn escape_comma(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn escape_comma_str(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn two_disk_spec() -> LaunchSpec {
        let disk = |i: usize, node: u32, file: &str, format| DiskSpec {
            target: format!("vd{}", char::from(b'a' + i as u8)),
            device_index: i,
            node_index: node,
            source: PathBuf::from(file),
            source_kind: SourceKind::File,
            format,
            readonly: false,
            boot_index: (i == 0).then_some(1),
            has_backing: false,
            backing: Vec::new(),
        };
        LaunchSpec {
            name: "vm1".into(),
            uuid: "6b3c6a4e-1c4b-4a8e-9d7e-2f0a1b2c3d4e".parse().unwrap(),
            emulator: "/usr/bin/qemu-system-x86_64".into(),
            machine: "pc-i440fx-7.2".into(),
            accel: Accel::Tcg,
            memory_kib: 128 * 1024,
            vcpus: 1,
            acpi: false,
            disks: vec![
                disk(0, 2, "/tmp/ref/vda.qcow2", DiskFormat::Qcow2),
                disk(1, 1, "/tmp/ref/vdb.raw", DiskFormat::Raw),
            ],
            run_dir: "/run/virtbackupd/qemu/vm1".into(),
        }
    }

    #[test]
    fn two_disk_command_line_matches_libvirt() {
        let argv = build_argv(&two_disk_spec()).unwrap();
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        let expected = [
            "-name",
            "guest=vm1,debug-threads=on",
            "-S",
            "-machine",
            "pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram",
            "-accel",
            "tcg",
            "-cpu",
            "qemu64",
            "-m",
            "128",
            "-object",
            r#"{"qom-type":"memory-backend-ram","id":"pc.ram","size":134217728}"#,
            "-overcommit",
            "mem-lock=off",
            "-smp",
            "1,sockets=1,cores=1,threads=1",
            "-uuid",
            "6b3c6a4e-1c4b-4a8e-9d7e-2f0a1b2c3d4e",
            "-display",
            "none",
            "-no-user-config",
            "-nodefaults",
            "-chardev",
            "socket,id=charmonitor,path=/run/virtbackupd/qemu/vm1/monitor.sock,server=on,wait=off",
            "-mon",
            "chardev=charmonitor,id=monitor,mode=control",
            "-rtc",
            "base=utc",
            "-no-acpi",
            "-boot",
            "strict=on",
            "-blockdev",
            r#"{"driver":"file","filename":"/tmp/ref/vda.qcow2","node-name":"libvirt-2-storage","auto-read-only":true,"discard":"unmap"}"#,
            "-blockdev",
            r#"{"node-name":"libvirt-2-format","read-only":false,"driver":"qcow2","file":"libvirt-2-storage","backing":null}"#,
            "-device",
            r#"{"driver":"virtio-blk-pci","bus":"pci.0","addr":"0x2","drive":"libvirt-2-format","id":"virtio-disk0","bootindex":1}"#,
            "-blockdev",
            r#"{"driver":"file","filename":"/tmp/ref/vdb.raw","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}"#,
            "-blockdev",
            r#"{"node-name":"libvirt-1-format","read-only":false,"driver":"raw","file":"libvirt-1-storage"}"#,
            "-device",
            r#"{"driver":"virtio-blk-pci","bus":"pci.0","addr":"0x3","drive":"libvirt-1-format","id":"virtio-disk1"}"#,
            "-audiodev",
            r#"{"id":"audio1","driver":"none"}"#,
            "-device",
            r#"{"driver":"virtio-balloon-pci","id":"balloon0","bus":"pci.0","addr":"0x4"}"#,
            "-pidfile",
            "/run/virtbackupd/qemu/vm1/qemu.pid",
            "-msg",
            "timestamp=on",
        ];
        assert_eq!(argv, expected);
    }

    #[test]
    fn options_vary_with_the_spec() {
        let mut spec = two_disk_spec();
        spec.name = "a,b".into();
        spec.accel = Accel::Kvm;
        spec.acpi = true;
        spec.vcpus = 2;
        spec.memory_kib = 65 * 1024 + 1; // rounded up to whole MiB
        spec.run_dir = "/run/x,y".into();
        spec.disks.truncate(1);
        spec.disks[0].readonly = true;
        spec.disks[0].boot_index = None;
        spec.disks[0].source_kind = SourceKind::Block;
        spec.disks[0].source = "/dev/vg/lv".into();
        let argv = build_argv(&spec).unwrap();
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        let has = |s: &str| argv.contains(&s);
        assert!(has("guest=a,,b,debug-threads=on"));
        assert!(has("kvm"));
        assert!(!has("-no-acpi"));
        assert!(has("2,sockets=2,cores=1,threads=1"));
        assert!(has("66"));
        assert!(has(
            "socket,id=charmonitor,path=/run/x,,y/monitor.sock,server=on,wait=off"
        ));
        assert!(has(
            r#"{"driver":"host_device","filename":"/dev/vg/lv","node-name":"libvirt-2-storage","auto-read-only":true,"discard":"unmap"}"#
        ));
        assert!(has(
            r#"{"node-name":"libvirt-2-format","read-only":true,"driver":"qcow2","file":"libvirt-2-storage","backing":null}"#
        ));
        assert!(has(
            r#"{"driver":"virtio-blk-pci","bus":"pci.0","addr":"0x2","drive":"libvirt-2-format","id":"virtio-disk0"}"#
        ));
        assert!(has(
            r#"{"driver":"virtio-balloon-pci","id":"balloon0","bus":"pci.0","addr":"0x3"}"#
        ));
    }

    /// A disk on a chain: every layer's nodes, the bottom first, each
    /// format node naming the one below, the lower layers read-only (as
    /// libvirt 9.0 writes a chain).
    #[test]
    fn a_chain_names_every_layer() {
        let mut spec = two_disk_spec();
        spec.disks.truncate(1);
        spec.disks[0].node_index = 1;
        spec.disks[0].has_backing = true;
        spec.disks[0].backing = vec![
            BackingSpec {
                node_index: 2,
                source: "/i/mid.qcow2".into(),
                source_kind: SourceKind::File,
                format: DiskFormat::Qcow2,
            },
            BackingSpec {
                node_index: 3,
                source: "/dev/base".into(),
                source_kind: SourceKind::Block,
                format: DiskFormat::Raw,
            },
        ];
        let argv = build_argv(&spec).unwrap();
        let blockdevs: Vec<&str> = argv
            .windows(2)
            .filter(|w| w[0] == "-blockdev")
            .map(|w| w[1].to_str().unwrap())
            .collect();
        assert_eq!(
            blockdevs,
            [
                r#"{"driver":"host_device","filename":"/dev/base","node-name":"libvirt-3-storage","auto-read-only":true,"discard":"unmap"}"#,
                r#"{"node-name":"libvirt-3-format","read-only":true,"driver":"raw","file":"libvirt-3-storage"}"#,
                r#"{"driver":"file","filename":"/i/mid.qcow2","node-name":"libvirt-2-storage","auto-read-only":true,"discard":"unmap"}"#,
                r#"{"node-name":"libvirt-2-format","read-only":true,"driver":"qcow2","file":"libvirt-2-storage","backing":"libvirt-3-format"}"#,
                r#"{"driver":"file","filename":"/tmp/ref/vda.qcow2","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}"#,
                r#"{"node-name":"libvirt-1-format","read-only":false,"driver":"qcow2","file":"libvirt-1-storage","backing":"libvirt-2-format"}"#,
            ]
        );
        // A chain the daemon could not read is opened from the header.
        spec.disks[0].backing.clear();
        let argv = build_argv(&spec).unwrap();
        assert!(argv.iter().any(|a| a
            == r#"{"node-name":"libvirt-1-format","read-only":false,"driver":"qcow2","file":"libvirt-1-storage"}"#));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut spec = two_disk_spec();
        spec.disks[1].node_index = 2;
        assert!(build_argv(&spec).is_err());
        let mut spec = two_disk_spec();
        spec.vcpus = 0;
        assert!(build_argv(&spec).is_err());
        let mut spec = two_disk_spec();
        spec.disks[0].source = PathBuf::from(OsString::from_vec(vec![0xff]));
        assert!(build_argv(&spec).is_err());
        let mut spec = two_disk_spec();
        spec.disks[1].device_index = 29;
        assert!(build_argv(&spec).is_err());
    }
}
