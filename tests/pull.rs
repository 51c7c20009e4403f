#![allow(clippy::tests_outside_test_module)]
//! Pull-mode backups: QEMU exports a frozen view of each disk over NBD and
//! a third party reads it. Driven by the stock virsh, libvirt-python,
//! python3-libnbd and Debian's virtnbdbackup/virtnbdrestore, unmodified,
//! against real QEMU.
//!
//! Guest writes go through HMP `qemu-io` on the guest's device, so QEMU
//! itself records them in its dirty bitmaps; images are compared only once
//! the domain is shut off (until then QEMU's caches hold the newest qcow2
//! metadata and another reader sees stale tables).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::images::identical;
use common::qemu_io;
use common::reference::{
    event_shape, job_completed, reference_events, unindexed, Area, Session, DISKS,
};
use common::storage::LoopDevice;
use common::{command, files, words, Daemon, Run};

/// libvirtd 9.0's pull-mode captures (see their README).
const AREA: Area = Area {
    root: "fixtures/reference/pull",
    tmp: "/tmp/prref",
    api_script: "bkapi.py",
};

/// A running domain `name` with vda (qcow2, 64 MiB, 1 MiB written before
/// start) and vdb (qcow2, 32 MiB).
fn running_domain(d: &Daemon, name: &str) -> (PathBuf, PathBuf) {
    let vda = d.image(&format!("{name}-vda.qcow2"), "qcow2", "64M");
    let vdb = d.image(&format!("{name}-vdb.qcow2"), "qcow2", "32M");
    qemu_io::write(&vda, "qcow2", "write -P 0x11 0 1M");
    let xml = d.domain_xml(name, &[("vda", &vda, "qcow2"), ("vdb", &vdb, "qcow2")]);
    d.define(name, &xml);
    d.virsh(&["start", name]).ok();
    (vda, vdb)
}

/// The nodes of a two-disk domain's own disks: all that is left once a
/// backup is over.
const DISK_NODES: [&str; 4] = [
    "libvirt-1-format",
    "libvirt-1-storage",
    "libvirt-2-format",
    "libvirt-2-storage",
];

/// virtnbdbackup or virtnbdrestore (`tool`) against our daemon: without
/// -U they would ask the system libvirtd, which CI does not run; with any
/// qemu+ URI they demand credentials, and any do on a unix socket.
fn virtnbd(d: &Daemon, tool: &str, args: &[&str]) -> Run {
    let uri = d.uri();
    let mut all = vec!["-U", &uri, "--user", "x", "--password", "x"];
    all.extend_from_slice(args);
    command(tool, &all)
}

fn virtnbdbackup(d: &Daemon, dom: &str, level: &str, out: &Path, scratch: &Path) {
    let (out, scratch) = (out.to_str().unwrap(), scratch.to_str().unwrap());
    let run = virtnbd(
        d,
        "virtnbdbackup",
        &[
            "-d",
            dom,
            "-l",
            level,
            "-o",
            out,
            "--scratchdir",
            scratch,
            "--noprogress",
        ],
    );
    assert!(
        run.code == 0 && run.stderr.contains("Finished successfully"),
        "virtnbdbackup -l {level}:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// virtnbdbackup full, guest writes, incremental twice; virtnbdrestore
/// gives back what the disks held at the last backup.
#[test]
fn virtnbdbackup_backs_up_and_virtnbdrestore_restores() {
    let d = Daemon::start();
    let (vda, vdb) = running_domain(&d, "vnb");
    let out = d.path("vnb-backup");
    let scratch = d.path("scratch");
    fs::create_dir_all(&scratch).unwrap();

    virtnbdbackup(&d, "vnb", "full", &out, &scratch);
    d.guest_write("vnb", 0, "write -P 0x22 2M 128k");
    d.guest_write("vnb", 1, "write -P 0x33 4M 192k");
    virtnbdbackup(&d, "vnb", "inc", &out, &scratch);
    d.guest_write("vnb", 0, "write -P 0x44 10M 64k");
    d.guest_write("vnb", 0, "write -P 0x55 0 4k");
    virtnbdbackup(&d, "vnb", "inc", &out, &scratch);

    // Every job ended and took its scratch files and socket with it.
    assert_eq!(
        words(&d.virsh(&["domjobinfo", "vnb"]).stdout),
        "Job type: None"
    );
    assert_eq!(files(&scratch), Vec::<String>::new());
    assert_eq!(d.node_names("vnb"), DISK_NODES);
    let run = d
        .virsh(&["checkpoint-list", "vnb", "--name", "--topological"])
        .ok();
    assert_eq!(
        run.stdout.trim(),
        "virtnbdbackup.0\nvirtnbdbackup.1\nvirtnbdbackup.2"
    );
    // The incrementals hold only what was written in between.
    let listing = files(&out);
    for name in [
        "vda.full.data",
        "vda.inc.virtnbdbackup.1.data",
        "vda.inc.virtnbdbackup.2.data",
        "vdb.full.data",
        "vdb.inc.virtnbdbackup.1.data",
        "vdb.inc.virtnbdbackup.2.data",
    ] {
        assert!(listing.iter().any(|f| f == name), "{name} in {listing:?}");
    }
    let size = |f: &str| fs::metadata(out.join(f)).unwrap().len();
    assert!(size("vda.full.data") >= 1 << 20);
    assert!(size("vda.inc.virtnbdbackup.1.data") < (128 << 10) + 4096);
    assert!(size("vdb.inc.virtnbdbackup.1.data") >= 192 << 10);
    assert!(size("vdb.inc.virtnbdbackup.2.data") < 4096);

    // Shut off, the images are what QEMU wrote; the restore equals them.
    d.virsh(&["destroy", "vnb"]).ok();
    let restored = d.path("restored");
    let run = virtnbd(
        &d,
        "virtnbdrestore",
        &[
            "-i",
            out.to_str().unwrap(),
            "-o",
            restored.to_str().unwrap(),
        ],
    );
    assert_eq!(
        run.code, 0,
        "virtnbdrestore:\n{}\n{}",
        run.stdout, run.stderr
    );
    // virtnbdrestore names each image after the disk's source file.
    for image in [&vda, &vdb] {
        identical(image, &restored.join(image.file_name().unwrap()));
    }
}

/// Reads an export's meta contexts and the dirty extents of
/// `qemu:dirty-bitmap:<bitmap>`, and checks the frozen view, with
/// python3-libnbd. Prints `contexts: ...` and `dirty: off+len ...`.
const NBD_PROBE: &str = r#"
import nbd, os, sys
sock, export, bitmap = os.environ["SOCK"], os.environ["EXPORT"], os.environ["BITMAP"]
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_unix(sock)
h.set_export_name(export)
names = []
h.opt_list_meta_context(lambda name: names.append(name) or 0)
print("contexts:", " ".join(sorted(names)))
ctx = "qemu:dirty-bitmap:" + bitmap
h.add_meta_context(ctx)
h.opt_go()
size = h.get_size()
dirty, offset = [], 0
while offset < size:
    got = []
    def extent(meta, off, entries, err):
        if meta == ctx:
            got.extend(entries)
        return 0
    h.block_status(min(size - offset, 1 << 30), offset, extent)
    for i in range(0, len(got), 2):
        length, flags = got[i], got[i + 1]
        if flags & 1:
            if dirty and dirty[-1][0] + dirty[-1][1] == offset:
                dirty[-1][1] += length
            else:
                dirty.append([offset, length])
        offset += length
print("dirty:", " ".join("%d+%d" % (o, l) for o, l in dirty))
pattern = os.environ.get("PATTERN")
if pattern:
    off, byte = pattern.split(":")
    data = h.pread(4096, int(off))
    print("frozen:", all(b == int(byte, 16) for b in data))
"#;

fn nbd_probe(d: &Daemon, sock: &Path, export: &str, bitmap: &str, pattern: &str) -> Run {
    let run = Run::of(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(NBD_PROBE)
            .env("SOCK", sock)
            .env("EXPORT", export)
            .env("BITMAP", bitmap)
            .env("PATTERN", pattern),
    );
    assert_eq!(run.code, 0, "{}\n{}\n{}", run.stdout, run.stderr, d.log());
    run
}

/// An incremental pull backup exports exactly the clusters written since
/// the checkpoint, and a frozen view: writes after the start do not show.
/// Aborting while a client reads ends the export and leaves nothing.
#[test]
fn libnbd_reads_the_frozen_view_and_the_dirty_clusters() {
    let d = Daemon::start();
    running_domain(&d, "inc");
    d.virsh(&["checkpoint-create-as", "inc", "cp1"]).ok();
    // 64 KiB clusters: 1M+64k, 5M+64k..+192k (two clusters), 20M+4k
    // (one cluster, 20M+64k..+128k).
    d.guest_write("inc", 0, "write -P 0x61 1M 64k");
    d.guest_write("inc", 0, "write -P 0x62 5184k 128k");
    d.guest_write("inc", 0, "write -P 0x63 20544k 4k");

    let sock = d.path("nbd.sock");
    let backup = format!(
        "<domainbackup mode='pull'><incremental>cp1</incremental>\
         <server transport='unix' socket='{}'/>\
         <disks><disk name='vda' type='file'><scratch file='{}'/></disk>\
         <disk name='vdb' backup='no'/></disks></domainbackup>",
        sock.display(),
        d.path("vda.scratch").display()
    );
    fs::write(d.path("pull.xml"), backup).unwrap();
    fs::write(
        d.path("cp2.xml"),
        "<domaincheckpoint><name>cp2</name></domaincheckpoint>",
    )
    .unwrap();
    let pull = d.path("pull.xml");
    let cp2 = d.path("cp2.xml");
    let run = d
        .virsh(&[
            "backup-begin",
            "inc",
            pull.to_str().unwrap(),
            cp2.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(run.stdout.trim(), "Backup started");

    // Only the daemon's user may connect to the socket.
    let meta = fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let run = d.virsh(&["backup-dumpxml", "inc"]).ok();
    let xml = words(&run.stdout);
    assert!(
        xml.contains(&format!(
            "<server transport='unix' socket='{}'/>",
            sock.display()
        )),
        "{xml}"
    );
    assert!(
        xml.contains("<disk name='vda' backup='yes' type='file' backupmode='incremental' incremental='cp1' exportname='vda' exportbitmap='backup-vda' index='"),
        "{xml}"
    );
    let run = d.virsh(&["domjobinfo", "inc"]).ok();
    let info = words(&run.stdout);
    assert!(
        info.starts_with("Job type: Unbounded Operation: Backup"),
        "{info}"
    );
    assert!(
        info.contains("Temporary disk space total: 64.000 MiB"),
        "{info}"
    );

    // The disk has a backup block job while it is exported; vdb none.
    let run = d.virsh_loud(&["blockjob", "inc", "vda", "--info"]).ok();
    // virsh draws it as a progress bar on stderr.
    assert!(run.stderr.starts_with("\rBackup: ["), "{run:?}");
    let run = d.virsh_loud(&["blockjob", "inc", "vdb", "--info"]).ok();
    assert_eq!(run.stdout.trim(), "No current block job for vdb");

    // A write after the start goes to the disk; the export keeps the old
    // data (the scratch image receives it first).
    d.guest_write("inc", 0, "write -P 0x77 1M 64k");
    let probe = nbd_probe(&d, &sock, "vda", "backup-vda", "1048576:61");
    let lines: Vec<&str> = probe.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "contexts: base:allocation qemu:dirty-bitmap:backup-vda",
            "dirty: 1048576+65536 5308416+131072 21037056+65536",
            "frozen: True",
        ],
        "{}",
        probe.stderr
    );
    let run = d.virsh(&["domjobinfo", "inc"]).ok();
    assert!(
        words(&run.stdout).contains("Temporary disk space use: 64.000 KiB"),
        "{}",
        run.stdout
    );

    // Abort while a client is connected: its reads end, and the scratch
    // file, the socket, the temporary bitmap and the nodes go.
    let mut reader = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import nbd, os, sys, time\n\
             h = nbd.NBD(); h.set_export_name('vda'); h.connect_unix(os.environ['SOCK'])\n\
             h.pread(65536, 0); print('connected', flush=True)\n\
             for i in range(600):\n\
             \x20   try:\n\
             \x20       h.pread(65536, 0)\n\
             \x20   except nbd.Error as e:\n\
             \x20       print('ended'); sys.exit(0)\n\
             \x20   time.sleep(0.05)\n\
             print('still reading')\n",
        )
        .env("SOCK", &sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the reader has connected (its first read proves it), abort; the
    // reader polls, every 50 ms for up to 30 s, for its reads to fail.
    let mut said = BufReader::new(reader.stdout.take().unwrap());
    let mut out = String::new();
    said.read_line(&mut out).unwrap();
    d.virsh(&["domjobabort", "inc"]).ok();
    said.read_to_string(&mut out).unwrap();
    reader.wait().unwrap();
    assert_eq!(out, "connected\nended\n");
    d.wait_idle("inc");
    assert!(!sock.exists());
    assert!(!d.path("vda.scratch").exists());
    let run = d.virsh(&["domjobinfo", "inc", "--completed"]).ok();
    let info = words(&run.stdout);
    assert!(
        info.starts_with("Job type: Completed Operation: Backup"),
        "{info}"
    );
    assert!(
        info.ends_with("Error message: Operation canceled"),
        "{info}"
    );
    assert_eq!(d.node_names("inc"), DISK_NODES);
    // The abort is a pull backup's normal end: the checkpoint stays.
    let run = d
        .virsh(&["checkpoint-list", "inc", "--name", "--topological"])
        .ok();
    assert_eq!(run.stdout.trim(), "cp1\ncp2");
    let nodes = d.nodes_text("inc");
    assert!(!nodes.contains("backup-vda"), "{nodes}");
}

/// TCP: a port from the configured range when none is given, shown by
/// backup-dumpxml; requests the daemon cannot serve fail and leave
/// nothing; a restarted daemon keeps the export and can still abort it.
#[test]
fn tcp_ports_refusals_and_a_restart() {
    let mut d = Daemon::start_with(&[
        "--nbd-port-range",
        "20809-20819",
        "--backup-tls-dir",
        "/nonexistent/pki",
    ]);
    running_domain(&d, "tcp");
    let dir = d.dir.path().to_path_buf();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let tcp = write(
        "tcp.xml",
        "<domainbackup mode='pull'><server transport='tcp' name='127.0.0.1'/></domainbackup>"
            .to_string(),
    );
    d.virsh(&["backup-begin", "tcp", &tcp]).ok();
    let run = d.virsh(&["backup-dumpxml", "tcp"]).ok();
    let xml = words(&run.stdout);
    let port: u16 = xml
        .split(" port='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {xml}"));
    assert!((20809..=20819).contains(&port), "{xml}");
    assert!(
        xml.contains(&format!(
            "<server transport='tcp' name='127.0.0.1' port='{port}'/>"
        )),
        "{xml}"
    );

    // A restart keeps the export readable and the job abortable.
    d.restart();
    let read = Run::of(Command::new("/usr/bin/python3").arg("-c").arg(format!(
        "import nbd\nh = nbd.NBD(); h.set_export_name('vda'); h.connect_tcp('127.0.0.1', '{port}')\n\
         print(h.get_size(), h.pread(4, 0))"
    )));
    assert_eq!(
        read.stdout, "67108864 bytearray(b'\\x11\\x11\\x11\\x11')\n",
        "{}",
        read.stderr
    );
    let run = d.virsh(&["backup-dumpxml", "tcp"]).ok();
    assert!(words(&run.stdout).contains(&format!("port='{port}'")));
    d.virsh(&["domjobabort", "tcp"]).ok();
    d.wait_idle("tcp");
    // The default scratch files (next to the disks, named by the epoch)
    // went with the job.
    let leftovers: Vec<String> = files(d.dir.path())
        .into_iter()
        .filter(|f| f.starts_with("tcp-vda.qcow2.") || f.starts_with("tcp-vdb.qcow2."))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());

    // Refused, and whatever was made for them goes again. TLS: QEMU reads
    // the credentials from the configured directory; none there gives
    // libvirtd's error for its default /etc/pki/qemu.
    let tls = write(
        "tls.xml",
        "<domainbackup mode='pull'><server transport='tcp' name='127.0.0.1' port='20810' tls='yes'/>\
         </domainbackup>"
            .to_string(),
    );
    d.virsh(&["backup-begin", "tcp", &tls]).fails_with(
        "error: internal error: unable to execute QEMU command 'object-add': \
         Unable to access credentials /nonexistent/pki/ca-cert.pem: No such file or directory",
    );
    let taken = d.path("taken.sock");
    fs::write(&taken, "not a socket").unwrap();
    let exists = write(
        "exists.xml",
        format!(
            "<domainbackup mode='pull'><server transport='unix' socket='{}'/>\
             <disks><disk name='vda' type='file'/></disks></domainbackup>",
            taken.display()
        ),
    );
    d.virsh(&["backup-begin", "tcp", &exists])
        .fails_with(&format!(
            "error: Requested operation is not valid: NBD socket '{}' already exists",
            taken.display()
        ));
    assert_eq!(fs::read_to_string(&taken).unwrap(), "not a socket");
    let raw = write(
        "raw.xml",
        format!(
            "<domainbackup mode='pull'><server transport='unix' socket='{}'/>\
             <disks><disk name='vda' type='file'><driver type='raw'/><scratch file='{}'/></disk></disks></domainbackup>",
            d.path("raw.sock").display(),
            d.path("raw.scratch").display()
        ),
    );
    // libvirt's pull schema takes only qcow2 scratch images.
    d.virsh(&["backup-begin", "tcp", &raw]).fails_with(
        "error: XML document failed to validate against schema: Unable to validate doc against /usr/share/libvirt/schemas/domainbackup.rng",
    );
    // A socket whose directory does not exist: QEMU's error, and the
    // scratch file, nodes and checkpoint made for it are gone again.
    let nodir = write(
        "nodir.xml",
        format!(
            "<domainbackup mode='pull'><server transport='unix' socket='{}'/>\
             <disks><disk name='vda' type='file'><scratch file='{}'/></disk></disks></domainbackup>",
            d.path("missing/x.sock").display(),
            d.path("nodir.scratch").display()
        ),
    );
    let cp = write(
        "cpx.xml",
        "<domaincheckpoint><name>cpx</name></domaincheckpoint>".to_string(),
    );
    d.virsh(&["backup-begin", "tcp", &nodir, &cp])
        .fails_with(&format!(
            "error: internal error: unable to execute QEMU command 'nbd-server-start': \
         Failed to bind socket to {}: No such file or directory",
            d.path("missing/x.sock").display()
        ));
    assert!(!d.path("nodir.scratch").exists());
    let leftovers: Vec<String> = files(d.dir.path())
        .into_iter()
        .filter(|f| f.starts_with("tcp-vda.qcow2.") || f.starts_with("tcp-vdb.qcow2."))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    assert!(!d.path("raw.scratch").exists());
    let run = d.virsh(&["checkpoint-list", "tcp", "--name"]).ok();
    assert_eq!(run.stdout.trim(), "");
    let nodes = d.nodes_text("tcp");
    assert!(!nodes.contains("cpx"), "{nodes}");
    assert_eq!(d.node_names("tcp"), DISK_NODES);
    assert_eq!(
        words(&d.virsh(&["domjobinfo", "tcp"]).stdout),
        "Job type: None"
    );
}

impl Session {
    /// Runs the reference's `nbdread.py` call of capture `name` against our
    /// server and asserts it read what it read from libvirtd's.
    #[track_caller]
    fn replay_nbd(&self, name: &str) {
        let (command, stdout, stderr, code) = self.area.capture(name);
        let args: Vec<String> = command
            .strip_prefix("./nbdread.py ")
            .unwrap_or_else(|| panic!("{name} is not an nbdread.py call: {command}"))
            .split_whitespace()
            .map(|a| self.ours(a.trim_matches('\'')))
            .collect();
        let run = Run::of(
            Command::new("/usr/bin/python3")
                .arg(self.area.path("nbdread.py"))
                .args(&args)
                .current_dir(&self.dir),
        );
        assert_eq!(self.theirs(&run.stdout), stdout, "{name}: {}", run.stderr);
        // A traceback names the script's path: only its last line counts.
        assert_eq!(
            (run.stderr.lines().last(), run.code),
            (stderr.lines().last(), code),
            "{name}"
        );
    }
}

/// The pull session libvirtd 9.0 was recorded in, replayed command by
/// command: what virsh, libvirt-python and an NBD client (the reference's
/// own nbdread.py, down to the sha256 of each frozen view) see is what
/// they saw with libvirtd. The socket's mode is the one deliberate
/// difference (0600 here), so its `ls` is not compared.
#[test]
fn a_pull_session_sees_what_it_saw_with_libvirtd() {
    let s = Session::start(&AREA, Daemon::start());
    s.images(&DISKS);
    s.define("prvm");
    s.virsh(&["start", "prvm"]).ok();
    s.replay_write("hmp-write-vda-1");
    s.replay_write("hmp-write-vdb-1");

    // Full, over a unix socket; a write while it runs.
    let events = s.events("prvm");
    s.replay("backup-begin-unix");
    s.replay("backup-dumpxml-unix");
    s.replay("domjobinfo-unix");
    s.replay_api("api-jobstats-unix", &["time_elapsed"]);
    s.replay_nbd("nbd-unix-full");
    s.replay_nbd("nbd-unix-full-vdb");
    s.replay_nbd("nbd-unix-vdc");
    s.replay_write("hmp-write-vda-during-pull");
    s.replay("domjobinfo-unix-after-write");
    s.replay_api("api-jobstats-unix-after-write", &["time_elapsed"]);
    s.replay_nbd("nbd-unix-full-after-write");
    s.replay("domjobabort-unix");
    events.wait_for("Backup for vdb canceled");
    let raw = events.finish(&s.daemon);
    let want: Vec<String> = reference_events(&s, "event-unix-abort-all");
    assert_eq!(event_shape(&raw), want[..11], "{raw:#?}");
    assert_eq!(job_completed(&raw)["success"], "1");
    s.daemon.wait_idle("prvm");
    assert_eq!(
        s.files("."),
        [
            "out",
            "prvm.xml",
            "vda.qcow2",
            "vdb.qcow2",
            "vdc.raw",
            "xml"
        ]
    );
    s.replay_api("api-jobstats-completed-unix-abort", &["time_elapsed"]);
    s.replay("domjobinfo-completed-unix-abort");
    s.replay("domjobinfo-completed-unix-abort-again");

    // A listed disk without a scratch file: libvirt 9.0 makes up no name.
    s.replay("err-begin-noscratch");
    s.replay("err-begin-notype");

    // Incremental since cp1, with cp2 made in the same transaction.
    s.replay("checkpoint-create-cp1");
    for write in ["hmp-write-vda-2", "hmp-write-vda-3", "hmp-write-vdb-2"] {
        s.replay_write(write);
    }
    s.replay("backup-begin-incremental");
    let run = s.virsh(&["backup-dumpxml", "prvm"]).ok();
    let (_, theirs, _, _) = AREA.capture("backup-dumpxml-incremental");
    assert_eq!(unindexed(&s.theirs(&run.stdout)), unindexed(&theirs));
    s.replay_nbd("nbd-incremental-vda");
    s.replay_nbd("nbd-incremental-vdb");
    s.replay_api("api-jobstats-incremental", &["time_elapsed"]);
    s.replay("domjobabort-incremental");
    s.daemon.wait_idle("prvm");
    s.replay_api(
        "api-jobstats-completed-incremental-abort",
        &["time_elapsed"],
    );
    s.replay("checkpoint-list-after-incremental");

    // What cannot start, as libvirtd refuses it.
    for name in [
        "err-begin-tcp-noname",
        "err-begin-unix-nosocket",
        "err-begin-unix-relative",
        "err-begin-noserver",
        "err-begin-scratch-raw",
        "err-begin-incr-raw-disk",
        "err-begin-scratch-block-missing",
    ] {
        s.replay(name);
    }
    // Different by design: a TCP server without a port gets one here.
    let run = s.replay_only("err-begin-tcp-noport");
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.virsh(&["domjobabort", "prvm"]).ok();
    s.daemon.wait_idle("prvm");
    assert_eq!(
        words(&s.virsh(&["domjobinfo", "prvm"]).stdout),
        "Job type: None"
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate in
/// `dir`, with QEMU's and libnbd's file names.
fn make_certificates(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        Run::of(Command::new("openssl").args(args).current_dir(dir)).ok();
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    for (name, cn, ext) in [
        (
            "server",
            "/CN=localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "/CN=client", "extendedKeyUsage=clientAuth\n"),
    ] {
        fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            cn,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{name}-cert.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

/// tls='yes': the export is served over TLS with the daemon's x509
/// credentials and takes only clients with a certificate its CA signed.
#[test]
fn tls_exports_take_only_certified_clients() {
    let scratch = tempfile::tempdir().unwrap();
    let pki = scratch.path().join("pki");
    make_certificates(&pki);
    let d = Daemon::start_with(&["--backup-tls-dir", pki.to_str().unwrap()]);
    running_domain(&d, "tls");
    let xml = d.path("tls.xml");
    fs::write(
        &xml,
        "<domainbackup mode='pull'><server transport='tcp' name='127.0.0.1' tls='yes'/>\
         <disks><disk name='vda' type='file'><scratch file='SCRATCH'/></disk><disk name='vdb' backup='no'/></disks>\
         </domainbackup>"
            .replace("SCRATCH", d.path("tls.scratch").to_str().unwrap()),
    )
    .unwrap();
    d.virsh(&["backup-begin", "tls", xml.to_str().unwrap()])
        .ok();
    let dump = words(&d.virsh(&["backup-dumpxml", "tls"]).ok().stdout);
    let port = dump
        .split(" port='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a port")
        .to_string();
    assert!(dump.contains("tls='yes'"), "{dump}");
    let probe = Run::of(Command::new("/usr/bin/python3").arg("-c").arg(
            "import nbd, os, sys\n\
             port, pki = sys.argv[1], sys.argv[2]\n\
             for how in ('certificate', 'no certificate', 'plain'):\n\
             \x20   h = nbd.NBD(); h.set_export_name('vda')\n\
             \x20   if how != 'plain': h.set_tls(nbd.TLS_REQUIRE)\n\
             \x20   if how == 'certificate': h.set_tls_certificates(pki)\n\
             \x20   try:\n\
             \x20       h.connect_tcp('127.0.0.1', port); print(how, 'reads', h.pread(2, 0).hex())\n\
             \x20   except nbd.Error:\n\
             \x20       print(how, 'refused')\n",
    ).args([&port, pki.to_str().unwrap()]));
    assert_eq!(
        probe.stdout, "certificate reads 1111\nno certificate refused\nplain refused\n",
        "{}",
        probe.stderr
    );
    d.virsh(&["domjobabort", "tls"]).ok();
    d.wait_idle("tls");
    assert!(!d.path("tls.scratch").exists());
    // The credentials object went with the job: a second TLS backup works.
    d.virsh(&["backup-begin", "tls", xml.to_str().unwrap()])
        .ok();
    d.virsh(&["domjobabort", "tls"]).ok();
    d.wait_idle("tls");
}

/// Backup targets and scratch images on host block devices (loop devices
/// here, as in libvirtd's captures made by blk-session.sh): a qcow2 one is
/// formatted and a raw one written over instead of a file being created,
/// through QEMU's host_device driver, and the device stays when the job
/// ends. Replayed against libvirtd down to the QMP that formats and
/// attaches them.
#[test]
fn block_devices_are_formatted_and_kept_like_libvirtd_does() {
    let s = Session::start(&AREA, Daemon::start());
    let vda = s.daemon.image("prref/blk-vda.qcow2", "qcow2", "64M");
    let vdb = s.daemon.image("prref/blk-vdb.raw", "raw", "32M");
    qemu_io::write(&vda, "qcow2", "write -P 0x5a 0 1M");
    qemu_io::write(&vdb, "raw", "write -P 0x6b 0 512K");
    let devices: Vec<LoopDevice> = [("a", 64), ("b", 32), ("c", 64), ("d", 32)]
        .iter()
        .map(|(x, mib)| {
            LoopDevice::attach(
                &s.path(&format!("loop-{x}.img")),
                mib << 20,
                &s.path(&format!("dev-{x}")),
            )
        })
        .collect();
    s.define("prblk");
    s.virsh(&["start", "prblk"]).ok();
    let nodes = s.daemon.node_names("prblk");

    // Push: vda's qcow2 target formatted on a device, vdb's raw one
    // written over.
    let mark = s.daemon.log().len();
    s.replay("blk-backup-begin-push");
    s.daemon.wait_idle("prblk");
    s.same_qmp("blk-backup-begin-push", mark);
    s.replay("blk-domjobinfo-completed-push");
    s.replay_tool("blk-img-push-a");
    s.virsh(&["destroy", "prblk"]).ok();
    s.replay_tool("blk-compare-push-a");
    s.replay_tool("blk-compare-push-b");

    // Pull: the scratch images formatted on devices, with the disks as
    // their backing; the frozen view holds while the guest writes.
    s.virsh(&["start", "prblk"]).ok();
    let mark = s.daemon.log().len();
    s.replay("blk-backup-begin-pull");
    s.same_qmp("blk-backup-begin-pull", mark);
    s.replay("blk-backup-dumpxml-pull");
    s.replay_tool("blk-img-pull-c");
    s.replay_nbd("blk-nbd-pull-vda");
    s.replay_write("blk-hmp-write-vda");
    s.replay_nbd("blk-nbd-pull-vda-after-write");
    s.replay_nbd("blk-nbd-pull-vdb");
    s.replay("blk-domjobabort-pull");
    s.daemon.wait_idle("prblk");
    s.replay("blk-domjobinfo-completed-pull");
    assert_eq!(s.daemon.node_names("prblk"), nodes);
    for device in &devices {
        let kind = fs::metadata(&device.device).unwrap().file_type();
        assert!(kind.is_block_device(), "{}", device.device.display());
    }
    assert!(!s.path("blk.sock").exists());

    // Push again onto what the first push left, with --reuse-external.
    let mark = s.daemon.log().len();
    s.replay("blk-backup-begin-reuse");
    s.daemon.wait_idle("prblk");
    s.same_qmp("blk-backup-begin-reuse", mark);
    s.replay("blk-domjobinfo-completed-reuse");
    s.virsh(&["destroy", "prblk"]).ok();
    s.replay_tool("blk-compare-reuse-a");
    s.replay_tool("blk-compare-reuse-b");
}
