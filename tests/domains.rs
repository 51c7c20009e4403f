#![allow(clippy::tests_outside_test_module)]
//! Defining, starting, inspecting, stopping and undefining domains with the
//! stock virsh, against real QEMU.

mod common;

use common::{words, Daemon};

#[test]
fn define_list_and_inspect_a_shut_off_domain() {
    let daemon = Daemon::start();
    let vda = daemon.image("vda.qcow2", "qcow2", "16M");
    let xml = daemon.domain_xml("vm1", &[("vda", &vda, "qcow2")]);
    std::fs::write(daemon.path("vm1.xml"), &xml).unwrap();
    let file = daemon.path("vm1.xml");
    let run = daemon.virsh_loud(&["define", file.to_str().unwrap()]).ok();
    assert_eq!(
        run.stdout.trim(),
        format!("Domain 'vm1' defined from {}", file.display())
    );

    let run = daemon.virsh(&["list", "--all"]).ok();
    assert_eq!(words(&run.stdout), "- vm1 shut off");
    assert_eq!(daemon.virsh(&["list"]).ok().stdout.trim(), "");
    assert_eq!(
        daemon.answer(&["domstate", "vm1", "--reason"]),
        "shut off (unknown)"
    );
    assert_eq!(daemon.answer(&["domid", "vm1"]), "-");

    let info = daemon.virsh(&["dominfo", "vm1"]).ok().stdout;
    assert!(info.contains("State:          shut off"), "{info}");
    assert!(info.contains("Max memory:     65536 KiB"), "{info}");
    assert!(info.contains("Persistent:     yes"), "{info}");

    let uuid = daemon.answer(&["domuuid", "vm1"]);
    assert_eq!(uuid.len(), 36);
    assert_eq!(daemon.answer(&["domname", &uuid]), "vm1");

    let blk = daemon.virsh(&["domblklist", "vm1"]).ok().stdout;
    assert_eq!(words(&blk), format!("vda {}", vda.display()));
}

#[test]
fn start_destroy_and_the_state_on_the_way() {
    let daemon = Daemon::start();
    daemon.define_two_disk("vm2");
    assert_eq!(
        daemon.virsh_loud(&["start", "vm2"]).ok().stdout.trim(),
        "Domain 'vm2' started"
    );
    assert_eq!(daemon.qemu_pids().len(), 1);
    // QEMU leads a session of its own, as libvirt daemonizes it: signals
    // to the daemon's group miss it, and it is an autogroup of its own.
    let qemu = daemon.qemu_pids()[0];
    assert_eq!(session_of(qemu), qemu);
    assert_ne!(session_of(std::process::id() as i32), qemu);
    assert_eq!(
        daemon.answer(&["domstate", "vm2", "--reason"]),
        "running (booted)"
    );
    let id = daemon.answer(&["domid", "vm2"]);
    assert_eq!(
        words(&daemon.virsh(&["list"]).ok().stdout),
        format!("{id} vm2 running")
    );
    assert_eq!(daemon.answer(&["domname", &id]), "vm2");
    daemon
        .virsh(&["start", "vm2"])
        .fails_with("error: Domain is already active");

    let xml = daemon.virsh(&["dumpxml", "vm2"]).ok().stdout;
    assert!(
        xml.starts_with(&format!("<domain type='qemu' id='{id}'>")),
        "{xml}"
    );
    assert!(xml.contains("<alias name='virtio-disk1'/>"), "{xml}");
    let inactive = daemon.virsh(&["dumpxml", "--inactive", "vm2"]).ok().stdout;
    assert!(inactive.starts_with("<domain type='qemu'>"), "{inactive}");

    let status = daemon
        .virsh(&["qemu-monitor-command", "vm2", "--hmp", "info status"])
        .ok()
        .stdout;
    assert!(status.contains("VM status: running"), "{status}");
    let qmp = daemon
        .virsh(&[
            "qemu-monitor-command",
            "vm2",
            r#"{"execute":"query-status"}"#,
        ])
        .ok()
        .stdout;
    assert!(
        qmp.starts_with(r#"{"return":{"#) && qmp.contains(r#""id":"libvirt-"#),
        "{qmp}"
    );

    assert_eq!(
        daemon.virsh_loud(&["destroy", "vm2"]).ok().stdout.trim(),
        "Domain 'vm2' destroyed"
    );
    assert!(daemon.qemu_pids().is_empty());
    assert_eq!(
        daemon.answer(&["domstate", "vm2", "--reason"]),
        "shut off (destroyed)"
    );
    daemon
        .virsh(&["destroy", "vm2"])
        .fails_with("error: Requested operation is not valid: domain is not running");
    daemon
        .virsh(&["shutdown", "vm2"])
        .fails_with("error: Requested operation is not valid: domain is not running");
}

#[test]
fn shutdown_without_a_guest_leaves_the_domain_running() {
    let daemon = Daemon::start();
    daemon.define_two_disk("vm5");
    daemon.virsh(&["start", "vm5"]).ok();
    assert_eq!(
        daemon.virsh_loud(&["shutdown", "vm5"]).ok().stdout.trim(),
        "Domain 'vm5' is being shutdown"
    );
    assert_eq!(
        daemon.answer(&["domstate", "vm5", "--reason"]),
        "running (booted)"
    );
    daemon.virsh(&["destroy", "vm5"]).ok();
}

#[test]
fn kvm_without_dev_kvm_fails_at_start_not_at_define() {
    if std::path::Path::new("/dev/kvm").exists() {
        return;
    }
    let daemon = Daemon::start();
    let vda = daemon.image("k.qcow2", "qcow2", "16M");
    let xml = daemon
        .domain_xml("kvm1", &[("vda", &vda, "qcow2")])
        .replace("type='qemu'", "type='kvm'");
    daemon.define("kvm1", &xml);
    daemon.virsh(&["start", "kvm1"]).fails_with(
        "error: unsupported configuration: Emulator '/usr/bin/qemu-system-x86_64' does not support virt type 'kvm'",
    );
    assert!(daemon.qemu_pids().is_empty());
}

#[test]
fn undefine_a_running_domain_makes_it_transient() {
    let daemon = Daemon::start();
    daemon.define_two_disk("vm3");
    daemon.virsh(&["start", "vm3"]).ok();
    daemon.virsh(&["undefine", "vm3"]).ok();
    let info = daemon.virsh(&["dominfo", "vm3"]).ok().stdout;
    assert!(info.contains("Persistent:     no"), "{info}");
    daemon.virsh(&["destroy", "vm3"]).ok();
    daemon
        .virsh(&["dominfo", "vm3"])
        .fails_with("error: failed to get domain 'vm3'");
    assert_eq!(daemon.answer(&["list", "--all"]), "");
}

#[test]
fn define_errors_match_libvirt() {
    let daemon = Daemon::start();
    daemon.define_two_disk("vm4");
    let uuid = daemon.answer(&["domuuid", "vm4"]);
    let clash = format!(
        "<domain type='qemu'><name>other</name><uuid>{uuid}</uuid><memory>65536</memory>\
         <os><type>hvm</type></os></domain>"
    );
    std::fs::write(daemon.path("clash.xml"), clash).unwrap();
    let file = daemon.path("clash.xml");
    daemon
        .virsh(&["define", file.to_str().unwrap()])
        .fails_with(&format!(
            "error: operation failed: domain 'vm4' is already defined with uuid {uuid}"
        ));
    std::fs::write(
        daemon.path("slash.xml"),
        "<domain type='qemu'><name>../x</name><memory>65536</memory><os><type>hvm</type></os></domain>",
    )
    .unwrap();
    let file = daemon.path("slash.xml");
    daemon
        .virsh(&["define", file.to_str().unwrap()])
        .fails_with("error: XML error: name ../x cannot contain '/'");
    daemon
        .virsh(&["dominfo", "nosuchvm"])
        .fails_with("error: failed to get domain 'nosuchvm'");
    assert!(
        std::fs::read_dir(daemon.path("state/domains"))
            .unwrap()
            .count()
            == 1
    );
}

#[test]
fn list_filters() {
    let daemon = Daemon::start();
    daemon.define_two_disk("run1");
    daemon.define_two_disk("off1");
    daemon.define_two_disk("tmp1");
    daemon.virsh(&["start", "run1"]).ok();
    daemon.virsh(&["start", "tmp1"]).ok();
    daemon.virsh(&["undefine", "tmp1"]).ok();
    let names = |args: &[&str]| {
        let mut all = vec!["list", "--name"];
        all.extend_from_slice(args);
        let mut names: Vec<String> = daemon
            .virsh(&all)
            .ok()
            .stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        names.join(" ")
    };
    assert_eq!(names(&[]), "run1 tmp1");
    assert_eq!(names(&["--all"]), "off1 run1 tmp1");
    assert_eq!(names(&["--inactive"]), "off1");
    assert_eq!(names(&["--all", "--persistent"]), "off1 run1");
    assert_eq!(names(&["--all", "--transient"]), "tmp1");
    assert_eq!(names(&["--all", "--state-running"]), "run1 tmp1");
    assert_eq!(names(&["--all", "--state-shutoff"]), "off1");
    assert_eq!(names(&["--all", "--state-paused"]), "");
    assert_eq!(names(&["--all", "--no-autostart"]), "off1 run1 tmp1");
    assert_eq!(names(&["--all", "--autostart"]), "");
    assert_eq!(names(&["--all", "--with-snapshot"]), "");
    assert_eq!(names(&["--all", "--without-checkpoint"]), "off1 run1 tmp1");
    let uuids = daemon.virsh(&["list", "--all", "--uuid"]).ok().stdout;
    assert_eq!(uuids.lines().filter(|l| l.len() == 36).count(), 3);
}

#[test]
fn libvirt_python_runs_the_lifecycle_and_sees_its_events() {
    let daemon = Daemon::start();
    let vda = daemon.image("py-vda.qcow2", "qcow2", "16M");
    let xml = daemon.domain_xml("py2", &[("vda", &vda, "qcow2")]);
    std::fs::write(daemon.path("py2.xml"), xml).unwrap();
    let script = format!(
        r#"import libvirt, os, threading, time
libvirt.virEventRegisterDefaultImpl()
c = libvirt.open(os.environ['URI'])
seen = []
def cb(conn, dom, event, detail, opaque):
    seen.append('%s %d %d' % (dom.name(), event, detail))
c.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, cb, None)
def loop():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=loop, daemon=True).start()
d = c.defineXML(open('{xml}').read())
d.create()
state, maxmem, mem, vcpus, cpu = d.info()
print('info', state, maxmem, mem, vcpus, d.ID() > 0)
print('state', d.state())
print('xml', '<alias name=\'virtio-disk0\'/>' in d.XMLDesc(0))
d.destroy()
print('after', d.state(), d.ID())
d.undefine()
# Until the last one, Undefined Removed, has come.
deadline = time.time() + 60
while 'py2 1 0' not in seen and time.time() < deadline:
    time.sleep(0.05)
print('events', ', '.join(seen))
"#,
        xml = daemon.path("py2.xml").display()
    );
    let run = daemon.python(&script).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "info 1 65536 65536 1 True", "{}", run.stdout);
    assert_eq!(lines[1], "state [1, 1]");
    assert_eq!(lines[2], "xml True");
    assert_eq!(lines[3], "after [5, 2] -1");
    assert_eq!(
        lines[4], "events py2 0 0, py2 4 0, py2 2 0, py2 6 2, py2 5 1, py2 1 0",
        "{}",
        run.stdout
    );
}

#[test]
fn many_clients_at_once() {
    let daemon = Daemon::start();
    daemon.define_two_disk("busy");
    daemon.virsh(&["start", "busy"]).ok();
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..12)
            .map(|i| {
                let daemon = &daemon;
                scope.spawn(move || {
                    if i % 2 == 0 {
                        daemon.virsh(&["dominfo", "busy"]).ok();
                    } else {
                        daemon
                            .virsh(&["qemu-monitor-command", "busy", "--hmp", "info block"])
                            .ok();
                    }
                })
            })
            .collect();
        for run in runs {
            run.join().unwrap();
        }
    });
    daemon.virsh(&["destroy", "busy"]).ok();
}

#[test]
fn qemu_going_away_on_its_own_shuts_the_domain_off() {
    let daemon = Daemon::start();
    daemon.define_two_disk("gone");

    // Killed from outside: libvirt calls that a crash.
    daemon.virsh(&["start", "gone"]).ok();
    daemon.kill_qemu();
    daemon.wait_state("gone", "shut off (crashed)");
    assert!(
        daemon.path("run").read_dir().unwrap().next().is_none(),
        "live state left behind"
    );

    // Told to quit through the monitor: an orderly shutdown.
    daemon.virsh(&["start", "gone"]).ok();
    let _ = daemon.virsh(&["qemu-monitor-command", "gone", "--hmp", "quit"]);
    daemon.wait_state("gone", "shut off (shutdown)");
    assert!(daemon.qemu_pids().is_empty());
    daemon.virsh(&["start", "gone"]).ok();
    daemon.virsh(&["destroy", "gone"]).ok();
}

/// The session id of process `pid` (field 6 of /proc/PID/stat).
fn session_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap()
}
