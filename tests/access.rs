#![allow(clippy::tests_outside_test_module)]
//! Drop-in safety at the front door: libvirt's read-only rules for every
//! procedure, secrets only for the secure flag of read-write clients,
//! calls that pass descriptors, guest-agent calls, and names QEMU would
//! cut. Expectations come from libvirt 9.0 itself: its source
//! (fixtures/reference/access/readonly-rules.txt, api-error-domains.txt)
//! and libvirtd's answers (fixtures/reference/access/libvirtd.txt).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::images;
use common::raw::{bytes, Answer, Raw, CALL, CALL_WITH_FDS, QEMU, REMOTE};
use common::{Daemon, Run};
use virtbackupd::rpc::wire::{self, qemu_proc_info, remote_proc_info};

const ACCESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/reference/access");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(ACCESS).join(name)).expect("fixture")
}

fn nowhere() -> wire::remote_nonnull_domain {
    wire::remote_nonnull_domain {
        name: "nowhere".into(),
        uuid: [9; 16],
        id: -1,
    }
}

/// Encodes a procedure's arguments with the given flags.
type ArgsWithFlags<'a> = Box<dyn Fn(u32) -> Vec<u8> + 'a>;

/// libvirt's rules, by function name.
fn rules() -> HashMap<String, String> {
    fixture("readonly-rules.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(api, rule)| (api.to_string(), rule.to_string()))
        .collect()
}

fn error_domains() -> HashMap<String, i32> {
    fixture("api-error-domains.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(api, d)| (api.to_string(), d.parse().unwrap()))
        .collect()
}

fn mask(rule: &str, kind: &str) -> Option<u32> {
    let value = rule.strip_prefix(kind)?.trim();
    let hex = value.strip_prefix("0x");
    Some(hex.map_or_else(
        || value.parse().unwrap(),
        |h| u32::from_str_radix(h, 16).unwrap(),
    ))
}

/// Every procedure libvirt 9.0 numbers, on a read-only connection: the
/// writes are refused with libvirt's text and error domain, the reads are
/// not; then each flag (or source) of the six procedures whose refusal
/// depends on their arguments.
fn sweep(raw: &mut Raw) -> usize {
    let rules = rules();
    let domains = error_domains();
    let mut checked = 0;
    for (prog, info) in (0..=600)
        .filter_map(|n| remote_proc_info(n).map(|i| (REMOTE, i)))
        .chain((0..=20).filter_map(|n| qemu_proc_info(n).map(|i| (QEMU, i))))
    {
        let Some(api) = info.api else { continue };
        if info.event || info.number == wire::REMOTE_PROC_CONNECT_OPEN {
            continue;
        }
        if info.number == wire::REMOTE_PROC_CONNECT_CLOSE && prog == REMOTE {
            continue;
        }
        // Zeros decode as any procedure's arguments (empty strings and
        // lists, absent optionals, no flags), and what is left over is
        // ignored, as libvirtd ignores it: the call reaches its checks.
        let answer = raw.call(prog, info.number, CALL, &[0; 1024]);
        let domain = *domains
            .get(api)
            .unwrap_or_else(|| panic!("{api} has no error domain"));
        let refusal = Answer::Error(
            29,
            domain,
            format!("operation forbidden: read only access prevents {api}"),
        );
        match rules.get(api).map(String::as_str) {
            Some("write") => assert_eq!(answer, refusal, "{api}"),
            _ => assert!(
                !matches!(answer, Answer::Error(29, ..)),
                "{api} refused: {answer:?}"
            ),
        }
        checked += 1;
    }

    let dom = nowhere();
    let flag_calls: Vec<(&str, i32, ArgsWithFlags)> = vec![
        (
            "virDomainGetXMLDesc",
            wire::REMOTE_PROC_DOMAIN_GET_XML_DESC,
            Box::new(|flags| {
                bytes(&wire::remote_domain_get_xml_desc_args {
                    dom: dom.clone(),
                    flags,
                })
            }),
        ),
        (
            "virDomainManagedSaveGetXMLDesc",
            wire::REMOTE_PROC_DOMAIN_MANAGED_SAVE_GET_XML_DESC,
            Box::new(|flags| {
                bytes(&wire::remote_domain_managed_save_get_xml_desc_args {
                    dom: dom.clone(),
                    flags,
                })
            }),
        ),
        (
            "virDomainGetVcpusFlags",
            wire::REMOTE_PROC_DOMAIN_GET_VCPUS_FLAGS,
            Box::new(|flags| {
                bytes(&wire::remote_domain_get_vcpus_flags_args {
                    dom: dom.clone(),
                    flags,
                })
            }),
        ),
        (
            "virDomainSnapshotGetXMLDesc",
            wire::REMOTE_PROC_DOMAIN_SNAPSHOT_GET_XML_DESC,
            Box::new(|flags| {
                bytes(&wire::remote_domain_snapshot_get_xml_desc_args {
                    snap: wire::remote_nonnull_domain_snapshot {
                        name: "s".into(),
                        dom: dom.clone(),
                    },
                    flags,
                })
            }),
        ),
        (
            "virDomainCheckpointGetXMLDesc",
            wire::REMOTE_PROC_DOMAIN_CHECKPOINT_GET_XML_DESC,
            Box::new(|flags| {
                bytes(&wire::remote_domain_checkpoint_get_xml_desc_args {
                    checkpoint: wire::remote_nonnull_domain_checkpoint {
                        name: "c".into(),
                        dom: dom.clone(),
                    },
                    flags,
                })
            }),
        ),
    ];
    for (api, proc_, args) in &flag_calls {
        let rule = &rules[*api];
        for bit in 0..32 {
            let flags = 1u32 << bit;
            let answer = raw.call(REMOTE, *proc_, CALL, &args(flags));
            let secure = mask(rule, "secure").is_some_and(|m| m & flags != 0);
            let write = mask(rule, "write-flags").is_some_and(|m| m & flags != 0);
            let text = if secure {
                format!("operation forbidden: {api} with secure flag")
            } else {
                format!("operation forbidden: read only access prevents {api}")
            };
            if secure || write {
                assert_eq!(
                    answer,
                    Answer::Error(29, domains[*api], text),
                    "{api} {flags:#x}"
                );
            } else {
                assert!(
                    !matches!(answer, Answer::Error(29, ..)),
                    "{api} {flags:#x}: {answer:?}"
                );
            }
            checked += 1;
        }
    }
    let api = "virDomainInterfaceAddresses";
    let agent = mask(&rules[api], "write-source").unwrap();
    for source in 0..4 {
        let args = wire::remote_domain_interface_addresses_args {
            dom: dom.clone(),
            source,
            flags: 0,
        };
        let answer = raw.call(
            REMOTE,
            wire::REMOTE_PROC_DOMAIN_INTERFACE_ADDRESSES,
            CALL,
            &bytes(&args),
        );
        if source == agent {
            let text = format!("operation forbidden: read only access prevents {api}");
            assert_eq!(answer, Answer::Error(29, 20, text));
        } else {
            assert!(
                !matches!(answer, Answer::Error(29, ..)),
                "source {source}: {answer:?}"
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn read_only_connections_follow_libvirts_rules_for_every_procedure() {
    let daemon = Daemon::start();
    // The read-only socket, and the read-write one opened with
    // VIR_CONNECT_RO: libvirtd makes both connections read-only.
    let checked = sweep(&mut Raw::opened(&daemon.socket_ro(), 0));
    assert!(checked > 500, "{checked} calls");
    sweep(&mut Raw::opened(&daemon.socket(), 1));

    // Read-write: nothing is refused for being read-only.
    let mut rw = Raw::opened(&daemon.socket(), 0);
    let args = wire::remote_domain_get_xml_desc_args {
        dom: nowhere(),
        flags: 1,
    };
    let answer = rw.call(
        REMOTE,
        wire::REMOTE_PROC_DOMAIN_GET_XML_DESC,
        CALL,
        &bytes(&args),
    );
    assert!(matches!(answer, Answer::Error(42, ..)), "{answer:?}");
}

/// CALL_WITH_FDS: the count of descriptors leads the arguments, each
/// descriptor follows with one byte. Answered like a call, and the
/// connection goes on.
#[test]
fn calls_that_pass_descriptors_get_an_answer() {
    let daemon = Daemon::start();
    for (socket, expect) in [
        (
            daemon.socket(),
            "this function is not supported by the connection driver: virDomainOpenGraphics",
        ),
        (
            daemon.socket_ro(),
            "operation forbidden: read only access prevents virDomainOpenGraphics",
        ),
    ] {
        let mut raw = Raw::opened(&socket, 0);
        let mut body = 2u32.to_be_bytes().to_vec();
        body.extend(bytes(&nowhere()));
        body.extend([0; 8]); // idx, flags
        raw.send_call(
            REMOTE,
            wire::REMOTE_PROC_DOMAIN_OPEN_GRAPHICS,
            CALL_WITH_FDS,
            &body,
        );
        // What sendfd adds: one byte per descriptor (the descriptors
        // themselves are not sent by this test).
        raw.send(&[0, 0]);
        match raw.answer() {
            Answer::Error(_, _, text) => assert_eq!(text, expect),
            Answer::Ok => panic!("open-graphics succeeded"),
        }
        let answer = raw.call(REMOTE, wire::REMOTE_PROC_CONNECT_GET_HOSTNAME, CALL, &[]);
        assert_eq!(answer, Answer::Ok);
    }
    // More than libvirt's 32 descriptors ends that connection, as with
    // libvirtd, and only that one.
    let mut raw = Raw::opened(&daemon.socket(), 0);
    raw.send_call(
        REMOTE,
        wire::REMOTE_PROC_DOMAIN_OPEN_GRAPHICS,
        CALL_WITH_FDS,
        &33u32.to_be_bytes(),
    );
    assert!(raw.next().is_none(), "the connection lives on");
    daemon.virsh(&["list", "--all"]).ok();
}

/// libvirtd's answers to the guest-agent calls and the flag-restricted
/// reads, in each domain state, against ours.
#[test]
fn agent_calls_and_read_only_flags_answer_as_libvirtd() {
    let daemon = Daemon::start();
    let image = daemon.image("probe.qcow2", "qcow2", "16M");
    let run = Run::of(
        std::process::Command::new("/usr/bin/python3")
            .arg(Path::new(ACCESS).join("probe.py"))
            .args([&daemon.uri(), &daemon.uri_ro()])
            .arg(&image),
    )
    .ok();
    let theirs = fixture("libvirtd.txt");
    let ours: Vec<&str> = run.stdout.lines().collect();
    let theirs: Vec<&str> = theirs.lines().collect();
    assert_eq!(ours.len(), theirs.len());
    for (ours, theirs) in ours.iter().zip(&theirs) {
        if theirs.ends_with("internal error: wrong nlmsg len") {
            // libvirtd could not read the host's neighbour table where it
            // was recorded (netlink refused in that sandbox); with no
            // network interface the answer is an empty list.
            assert!(ours.ends_with(": OK {}"), "{ours}");
        } else if theirs.contains("<domain type='qemu' id=") {
            assert!(
                ours.starts_with(theirs.split(" id=").next().unwrap()),
                "{ours}"
            );
        } else {
            assert_eq!(ours, theirs);
        }
    }
}

const SECRET_DOMAIN: &str = "<domain type='qemu'>
  <name>NAME</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='http' name='/images/a.img'>
        <host name='example.org' port='80'/>
        <cookies>
          <cookie name='session'>s3cretcookie</cookie>
        </cookies>
      </source>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <graphics type='vnc' port='-1' autoport='yes' passwd='s3cret' passwdValidTo='2030-01-01T00:00:00'/>
    <graphics type='spice' autoport='yes' passwd='sp1ce' connected='keep'/>
  </devices>
</domain>
";

fn assert_no_secret(xml: &str) {
    for secret in ["s3cret", "sp1ce", "s3cretcookie", "<cookies"] {
        assert!(!xml.contains(secret), "{secret} in\n{xml}");
    }
}

/// Graphics passwords and disk cookies appear only with the secure flag on
/// a read-write connection, in the domain XML and in the domain a
/// checkpoint or snapshot embeds; the files that keep them are private.
#[test]
fn secrets_stay_hidden() {
    let daemon = Daemon::start();
    for name in ["sec-cp", "sec-snap"] {
        daemon.define(name, &SECRET_DOMAIN.replace("NAME", name));
    }

    let plain = daemon.virsh(&["dumpxml", "sec-cp"]).ok().stdout;
    assert_no_secret(&plain);
    // libvirtd keeps the expiry and the connected policy, as here.
    assert!(plain.contains(
        "<graphics type='vnc' port='-1' autoport='yes' passwdValidTo='2030-01-01T00:00:00'/>"
    ));
    assert!(plain.contains("<graphics type='spice' autoport='yes' connected='keep'/>"));
    let secure = daemon
        .virsh(&["dumpxml", "--security-info", "sec-cp"])
        .ok()
        .stdout;
    assert!(secure.contains("passwd='s3cret'") && secure.contains("s3cretcookie"));
    for flags in ["--security-info", "--migratable"] {
        daemon
            .virsh_at(&daemon.uri_ro(), &["dumpxml", flags, "sec-cp"])
            .fails_with("error: operation forbidden: virDomainGetXMLDesc with secure flag");
    }
    assert_no_secret(
        &daemon
            .virsh_at(&daemon.uri_ro(), &["dumpxml", "sec-cp"])
            .ok()
            .stdout,
    );

    // Moments embed the domain: redefine them with the secret-bearing
    // definition inside.
    // kind, domain, moment, the document's own elements.
    let moments = [
        ("checkpoint", "sec-cp", "c1", ""),
        ("snapshot", "sec-snap", "s1", "  <state>shutoff</state>\n"),
    ];
    for (kind, dom, name, extra) in moments {
        let secure = daemon
            .virsh(&["dumpxml", "--security-info", dom])
            .ok()
            .stdout;
        let embedded: String = secure.lines().map(|l| format!("  {l}\n")).collect();
        let root = format!("domain{kind}");
        let file = daemon.path(&format!("{kind}.xml"));
        let xml = format!(
            "<{root}>\n  <name>{name}</name>\n{extra}  <creationTime>1700000000</creationTime>\n{embedded}</{root}>\n"
        );
        std::fs::write(&file, xml).unwrap();
        let create = format!("{kind}-create");
        let path = file.to_str().unwrap();
        daemon.virsh(&[&create, dom, path, "--redefine"]).ok();
        let dumpxml = format!("{kind}-dumpxml");
        assert_no_secret(&daemon.virsh(&[&dumpxml, dom, name]).ok().stdout);
        let shown = daemon
            .virsh(&[&dumpxml, dom, name, "--security-info"])
            .ok()
            .stdout;
        assert!(
            shown.contains("passwd='s3cret'") && shown.contains("passwd='sp1ce'"),
            "{shown}"
        );
    }
    daemon
        .virsh_at(
            &daemon.uri_ro(),
            &["snapshot-dumpxml", "sec-snap", "s1", "--security-info"],
        )
        .fails_with("error: operation forbidden: virDomainSnapshotGetXMLDesc with secure flag");

    // Every file holding a definition is the daemon's alone.
    let state = daemon.path("state");
    let mut files = 0;
    let mut stack = vec![state.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if text.contains("s3cret") {
                assert_eq!(mode, 0o600, "{}", entry.path().display());
                let parent = entry.path().parent().unwrap().metadata().unwrap();
                assert_eq!(parent.permissions().mode() & 0o777, 0o700);
                files += 1;
            }
        }
    }
    assert!(
        files >= 4,
        "{files} files with the secret under {}",
        state.display()
    );
    let top = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(top, 0o700);
}

/// QEMU keeps 255 bytes of an internal snapshot's name: a longer one is
/// refused before QEMU is touched, and one at the limit round-trips.
#[test]
fn internal_snapshot_names_fit_qemu() {
    let daemon = Daemon::start();
    let image = daemon.image("names.qcow2", "qcow2", "16M");
    daemon.define(
        "names",
        &daemon.domain_xml("names", &[("vda", &image, "qcow2")]),
    );
    daemon.virsh(&["start", "names"]).ok();
    let long = "b".repeat(256);
    daemon.virsh(&["snapshot-create-as", "names", &long]).fails_with(
        "error: unsupported configuration: internal snapshot name is 256 bytes long, QEMU keeps at most 255",
    );
    let limit = "a".repeat(255);
    daemon.virsh(&["snapshot-create-as", "names", &limit]).ok();
    daemon.virsh(&["snapshot-delete", "names", &limit]).ok();
    daemon.virsh(&["destroy", "names"]).ok();
    assert_eq!(
        images::snapshot_list(&image),
        "",
        "snapshots left in the image"
    );
    assert_eq!(daemon.answer(&["snapshot-list", "names", "--name"]), "");
}
