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
        daemon
            .virsh(&["domstate", "vm1", "--reason"])
            .ok()
            .stdout
            .trim(),
        "shut off (unknown)"
    );
    assert_eq!(daemon.virsh(&["domid", "vm1"]).ok().stdout.trim(), "-");

    let info = daemon.virsh(&["dominfo", "vm1"]).ok().stdout;
    assert!(info.contains("State:          shut off"), "{info}");
    assert!(info.contains("Max memory:     65536 KiB"), "{info}");
    assert!(info.contains("Persistent:     yes"), "{info}");

    let uuid = daemon
        .virsh(&["domuuid", "vm1"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(uuid.len(), 36);
    assert_eq!(daemon.virsh(&["domname", &uuid]).ok().stdout.trim(), "vm1");

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
    assert_eq!(
        daemon
            .virsh(&["domstate", "vm2", "--reason"])
            .ok()
            .stdout
            .trim(),
        "running (booted)"
    );
    let id = daemon
        .virsh(&["domid", "vm2"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(
        words(&daemon.virsh(&["list"]).ok().stdout),
        format!("{id} vm2 running")
    );
    assert_eq!(daemon.virsh(&["domname", &id]).ok().stdout.trim(), "vm2");
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
        daemon
            .virsh(&["domstate", "vm2", "--reason"])
            .ok()
            .stdout
            .trim(),
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
        daemon
            .virsh(&["domstate", "vm5", "--reason"])
            .ok()
            .stdout
            .trim(),
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
    assert_eq!(daemon.virsh(&["list", "--all"]).ok().stdout.trim(), "");
}

#[test]
fn define_errors_match_libvirt() {
    let daemon = Daemon::start();
    daemon.define_two_disk("vm4");
    let uuid = daemon
        .virsh(&["domuuid", "vm4"])
        .ok()
        .stdout
        .trim()
        .to_string();
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
