#![allow(clippy::tests_outside_test_module)]
//! Checkpoints through the stock virsh and libvirt-python, against real
//! QEMU, compared with what libvirtd 9.0 printed for the same commands
//! (fixtures/reference/checkpoint/, see its README), and with the bitmaps
//! checked in QEMU and in the images.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{words, Daemon, Run};

const REFERENCE: &str = "fixtures/reference/checkpoint";
/// The name libvirtd gave the checkpoint created without a name.
const C3: &str = "1795325812";

/// What libvirtd printed: (stdout, stderr, exit status) of a capture.
fn capture(name: &str) -> (String, String, i32) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(REFERENCE)
        .join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (_, rest) = text.split_once("--- stdout ---\n").expect("stdout");
    let (stdout, rest) = rest.split_once("--- stderr ---\n").expect("stderr");
    let (stderr, status) = rest.split_once("--- exit status: ").expect("status");
    (
        stdout.to_string(),
        stderr.to_string(),
        status.trim().parse().expect("status number"),
    )
}

/// Times and dates vary between runs; the rest of virsh's output must not.
fn untimed(text: &str) -> String {
    let is_date = |w: &str| w.len() == 10 && w.as_bytes()[4] == b'-' && w.as_bytes()[7] == b'-';
    let is_time = |w: &str| w.len() == 8 && w.as_bytes()[2] == b':' && w.as_bytes()[5] == b':';
    text.split_whitespace()
        .map(|w| if is_date(w) || is_time(w) { "T" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts that `run` printed what libvirtd printed in capture `name`,
/// with `subst` (ours → libvirtd's) applied to our output first.
#[track_caller]
fn same_as(run: &Run, name: &str, subst: &[(&str, &str)]) {
    let (stdout, stderr, code) = capture(name);
    let fix = |s: &str| {
        subst.iter().fold(s.to_string(), |acc, (ours, theirs)| {
            acc.replace(ours, theirs)
        })
    };
    assert_eq!(
        untimed(&fix(&run.stdout)),
        untimed(&stdout),
        "stdout differs from {name}"
    );
    assert_eq!(fix(&run.stderr), stderr, "stderr differs from {name}");
    assert_eq!(run.code, code, "exit status differs from {name}");
}

/// The reference domain (fixtures/reference/checkpoint/cpvm.xml) with its
/// images in the test directory: vda, vdb qcow2, vdc raw.
fn define_cpvm(daemon: &Daemon, vdc_readonly: bool) -> PathBuf {
    let dir = daemon.path("cpref");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, format, size) in [
        ("vda.qcow2", "qcow2", "64M"),
        ("vdb.qcow2", "qcow2", "64M"),
        ("vdc.raw", "raw", "32M"),
    ] {
        if !dir.join(name).exists() {
            daemon.image(&format!("cpref/{name}"), format, size);
        }
    }
    let file = if vdc_readonly {
        "cpvm-vdc-readonly.xml"
    } else {
        "cpvm.xml"
    };
    let xml = reference_file(file).replace("/tmp/cpref", dir.to_str().unwrap());
    daemon.define("cpvm", &xml);
    dir
}

fn reference_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(REFERENCE)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Writes through the guest's view of disk `index` (0 = vda), as a guest
/// would: HMP qemu-io on the virtio backend.
fn guest_write(daemon: &Daemon, index: u32, what: &str) {
    let cmd =
        format!("qemu-io -d /machine/peripheral/virtio-disk{index}/virtio-backend \"{what}\"");
    let run = daemon
        .virsh(&["qemu-monitor-command", "cpvm", "--hmp", &cmd])
        .ok();
    assert_eq!(run.stdout.trim(), "", "qemu-io said: {}", run.stdout);
}

/// QEMU's bitmaps per format node: name → (count, recording, persistent).
fn live_bitmaps(daemon: &Daemon) -> BTreeMap<String, Vec<(String, u64)>> {
    let run = daemon
        .virsh(&[
            "qemu-monitor-command",
            "cpvm",
            r#"{"execute":"query-named-block-nodes","arguments":{"flat":true}}"#,
        ])
        .ok();
    let reply: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let mut out = BTreeMap::new();
    for node in reply["return"].as_array().unwrap() {
        let name = node["node-name"].as_str().unwrap();
        if !name.ends_with("-format") {
            continue;
        }
        let mut bitmaps: Vec<(String, u64)> = node["dirty-bitmaps"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|b| {
                        assert_eq!(b["persistent"], true, "{b}");
                        assert_eq!(b["recording"], true, "{b}");
                        (
                            b["name"].as_str().unwrap().to_string(),
                            b["count"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        bitmaps.sort();
        out.insert(name.to_string(), bitmaps);
    }
    out
}

fn live_names(daemon: &Daemon, node: &str) -> Vec<String> {
    live_bitmaps(daemon)
        .remove(node)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// The bitmaps stored in an image: (name, flags, granularity), sorted.
fn image_bitmaps(image: &Path) -> Vec<(String, Vec<String>, u64)> {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(image)
        .output()
        .expect("qemu-img info");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut bitmaps: Vec<(String, Vec<String>, u64)> = info["format-specific"]["data"]["bitmaps"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|b| {
                    let flags = b["flags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap().to_string())
                        .collect();
                    (
                        b["name"].as_str().unwrap().to_string(),
                        flags,
                        b["granularity"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    bitmaps.sort();
    bitmaps
}

fn image_names(image: &Path) -> Vec<String> {
    image_bitmaps(image).into_iter().map(|b| b.0).collect()
}

fn strings(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

const VDA: &str = "libvirt-3-format";
const VDB: &str = "libvirt-2-format";

/// Creates cp1 (vda, vdb) → cp2 (vda) → an unnamed one (vda, vdb) with the
/// guest writes of the reference session between them; returns the name
/// the unnamed one got.
fn reference_chain(daemon: &Daemon, dir: &Path) -> String {
    let run = daemon.virsh_loud(&[
        "checkpoint-create-as",
        "cpvm",
        "cp1",
        "first checkpoint",
        "--diskspec",
        "vda,checkpoint=bitmap",
        "--diskspec",
        "vdb,checkpoint=bitmap",
    ]);
    same_as(&run, "create-as-cp1", &[]);
    guest_write(daemon, 0, "write -P 0x5a 0 1M");
    let run = daemon.virsh_loud(&[
        "checkpoint-create-as",
        "cpvm",
        "cp2",
        "--diskspec",
        "vda,checkpoint=bitmap",
        "--diskspec",
        "vdb,checkpoint=no",
    ]);
    same_as(&run, "create-as-cp2", &[]);
    guest_write(daemon, 1, "write -P 0x33 1M 512k");
    let noname = daemon.path("noname.xml");
    std::fs::write(
        &noname,
        reference_file("noname.xml").replace("/tmp/cpref", dir.to_str().unwrap()),
    )
    .unwrap();
    let run = daemon
        .virsh_loud(&["checkpoint-create", "cpvm", noname.to_str().unwrap()])
        .ok();
    let c3 = run
        .stdout
        .trim()
        .strip_prefix("Domain checkpoint ")
        .and_then(|s| s.split_once(" created from "))
        .map(|(name, _)| name)
        .expect("created line")
        .to_string();
    assert!(c3.parse::<u64>().is_ok(), "default name is the time: {c3}");
    guest_write(daemon, 0, "write -P 0x5a 4M 1M");
    c3
}

#[test]
fn create_list_inspect_like_libvirtd() {
    let daemon = Daemon::start();
    let dir = define_cpvm(&daemon, false);
    daemon.virsh(&["start", "cpvm"]).ok();

    // Without <disks> every writable disk gets a bitmap: raw vdc cannot.
    same_as(
        &daemon.virsh_loud(&["checkpoint-create-as", "cpvm", "cp1"]),
        "create-as-plain",
        &[],
    );
    let c3 = reference_chain(&daemon, &dir);
    let ours = [(c3.as_str(), C3)];

    for (args, name) in [
        (&["--tree"][..], "list-tree"),
        (&["--parent"], "list-parent"),
        (&["--name"], "list-name"),
        (&["--topological"], "list-topological"),
        (&["--roots"], "list-roots"),
        (&["--leaves"], "list-leaves"),
        (&["--no-leaves"], "list-noleaves"),
        (&["--from", "cp1"], "list-from-cp1"),
        (
            &["--descendants", "--from", "cp1"],
            "list-descendants-from-cp1",
        ),
        (&["--tree", "--name"], "list-tree-name"),
        (&["--leaves", "--no-leaves"], "list-leaves-noleaves"),
        (&["--roots", "--leaves"], "list-roots-leaves"),
        (&["--parent", "--name"], "list-parent-name"),
        (&["--from", "cp2", "--tree"], "list-from-cp2-tree"),
        (&["--topological", "--name"], "list-topological-name"),
        (&["--from", C3], "list-from-c3"),
        (&["--roots", "--from", "cp2"], "list-roots-from-cp2"),
        (
            &["--parent", "--roots", "--leaves"],
            "list-parent-roots-leaves",
        ),
    ] {
        let mut full = vec!["checkpoint-list", "cpvm"];
        full.extend(args.iter().map(|a| if *a == C3 { c3.as_str() } else { a }));
        same_as(&daemon.virsh_loud(&full), name, &ours);
    }
    same_as(
        &daemon.virsh_loud(&["checkpoint-info", "cpvm", "cp2"]),
        "info-middle",
        &ours,
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-info", "cpvm", "cp1"]),
        "info-root",
        &ours,
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-parent", "cpvm", "cp2"]),
        "parent-child",
        &ours,
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-parent", "cpvm", "cp1"]),
        "parent-root",
        &ours,
    );

    // The sizes: everything written since each checkpoint, in whole
    // 64 KiB granules.
    for (cp, name) in [("cp1", "dumpxml-cp1-size"), ("cp2", "dumpxml-cp2-size")] {
        let ours = daemon
            .virsh(&["checkpoint-dumpxml", "cpvm", cp, "--size"])
            .ok()
            .stdout;
        let sizes = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.contains("size="))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(sizes(&ours), sizes(&capture(name).0), "{cp}");
    }
    let run = daemon
        .virsh(&["checkpoint-dumpxml", "cpvm", &c3, "--size", "--no-domain"])
        .ok();
    assert!(run.stdout.contains(&format!(
        "<disk name='vda' checkpoint='bitmap' bitmap='{c3}' size='1048576'/>"
    )));
    // An odd length still counts whole granules.
    guest_write(&daemon, 1, "write 40M 100000");
    let run = daemon
        .virsh(&["checkpoint-dumpxml", "cpvm", &c3, "--size", "--no-domain"])
        .ok();
    assert!(
        run.stdout.contains(&format!(
            "<disk name='vdb' checkpoint='bitmap' bitmap='{c3}' size='131072'/>"
        )),
        "{}",
        run.stdout
    );

    let run = daemon
        .virsh(&["checkpoint-dumpxml", "cpvm", "cp2", "--no-domain"])
        .ok();
    let (theirs, _, _) = capture("dumpxml-cp2-no-domain");
    let no_time = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.contains("creationTime"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(no_time(&run.stdout).trim(), no_time(&theirs).trim());
    let full = daemon
        .virsh(&["checkpoint-dumpxml", "cpvm", "cp1", "--security-info"])
        .ok()
        .stdout;
    assert!(full.contains("<description>first checkpoint</description>"));
    assert!(full.contains("  <domain type='qemu'>"), "{full}");

    // QEMU has one recording persistent bitmap per checkpoint and disk.
    let live = live_bitmaps(&daemon);
    let names = |node: &str| -> Vec<String> { live[node].iter().map(|b| b.0.clone()).collect() };
    assert_eq!(names(VDA), strings(&[&c3, "cp1", "cp2"]));
    assert_eq!(names(VDB), strings(&[&c3, "cp1"]));
    assert!(live["libvirt-1-format"].is_empty());

    // libvirt-python sees the same tree.
    let script = r#"
import libvirt, os
c = libvirt.open(os.environ["URI"]); d = c.lookupByName("cpvm")
print(sorted(x.getName() for x in d.listAllCheckpoints()))
print([x.getName() for x in d.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_ROOTS)])
cp2 = d.checkpointLookupByName("cp2")
print(cp2.getParent().getName(), [x.getName() for x in cp2.listAllChildren()])
try:
    d.checkpointLookupByName("cp1").getParent()
except libvirt.libvirtError as e:
    print(e.get_error_code(), e.get_error_domain(), e.get_error_message())
"#;
    let run = daemon.python(script).ok();
    assert_eq!(
        run.stdout,
        format!(
            "['{c3}', 'cp1', 'cp2']\n['cp1']\ncp1 ['{c3}']\n\
             103 10 Domain checkpoint not found: checkpoint 'cp1' does not have a parent\n"
        )
    );

    // Bitmaps reach the images when QEMU closes them.
    assert!(image_names(&dir.join("vda.qcow2")).is_empty());
    daemon.virsh(&["destroy", "cpvm"]).ok();
    let vda = image_bitmaps(&dir.join("vda.qcow2"));
    assert_eq!(
        vda.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
        strings(&[&c3, "cp1", "cp2"])
    );
    assert!(
        vda.iter().all(|b| b.1 == ["auto"] && b.2 == 65536),
        "{vda:?}"
    );
    assert_eq!(image_names(&dir.join("vdb.qcow2")), strings(&[&c3, "cp1"]));

    // Inactive: listing works, anything needing QEMU does not.
    same_as(
        &daemon.virsh_loud(&["checkpoint-dumpxml", "cpvm", "cp1", "--size"]),
        "err-inactive-dumpxml-size",
        &[],
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-create-as", "cpvm", "cpi", "--diskspec", "vda"]),
        "err-inactive-create",
        &[],
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-delete", "cpvm", "cp2"]),
        "err-inactive-delete",
        &[],
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-list", "cpvm", "--tree"]),
        "list-tree",
        &ours,
    );
}

#[test]
fn bad_input_gets_libvirts_errors_and_changes_nothing() {
    let daemon = Daemon::start();
    let dir = define_cpvm(&daemon, false);
    daemon.virsh(&["start", "cpvm"]).ok();
    daemon
        .virsh(&[
            "checkpoint-create-as",
            "cpvm",
            "cp1",
            "--diskspec",
            "vda",
            "--diskspec",
            "vdb",
        ])
        .ok();

    for (args, name) in [
        (
            &["a/b", "--diskspec", "vda"][..],
            "err-create-as-name-slash",
        ),
        (&["cpu", "--diskspec", "vdz"], "err-create-as-unknown-disk"),
        (
            &[
                "cpd",
                "--diskspec",
                "vda",
                "--diskspec",
                "vda,checkpoint=no",
            ],
            "err-create-as-dup-disk",
        ),
        (
            &["cpq", "--diskspec", "vda", "--quiesce"],
            "err-create-as-quiesce",
        ),
        (
            &["cp3", "--diskspec", "vdb,checkpoint=maybe"],
            "err-create-as-badspec",
        ),
        (
            &["cp3", "--diskspec", "vdc,checkpoint=bitmap"],
            "err-create-as-raw-bitmap",
        ),
    ] {
        let mut full = vec!["checkpoint-create-as", "cpvm"];
        full.extend_from_slice(args);
        same_as(&daemon.virsh_loud(&full), name, &[]);
    }
    for name in ["..", ".hidden", "x y", "tab\there", "caf\u{e9}"] {
        let run = daemon.virsh(&["checkpoint-create-as", "cpvm", name, "--diskspec", "vda"]);
        assert_ne!(run.code, 0, "{name:?} was accepted");
        assert!(
            run.stderr.contains("failed to validate against schema"),
            "{name:?}: {}",
            run.stderr
        );
    }
    // XML files: a control character, libvirt's name-length edge (QEMU
    // refuses bitmap names over 1023 bytes), an unknown disk path.
    for (file, want) in [
        ("name-dotdot.xml", "Extra element name in interleave"),
        ("name-ctrl.xml", "(domain_checkpoint)"),
        (
            "name-1024.xml",
            "Name length exceeds maximum (1023 characters)",
        ),
        (
            "name-4k.xml",
            "Name length exceeds maximum (1023 characters)",
        ),
        (
            "disk-unknown-path.xml",
            "unsupported configuration: no disk named",
        ),
        (
            "root-wrong.xml",
            "expecting root element of 'domaincheckpoint'",
        ),
        ("malformed.xml", "(domain_checkpoint)"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(REFERENCE)
            .join("xml")
            .join(file);
        let run = daemon.virsh(&["checkpoint-create", "cpvm", path.to_str().unwrap()]);
        assert_ne!(run.code, 0, "{file} was accepted");
        assert!(run.stderr.contains(want), "{file}: {}", run.stderr);
    }
    // A name taken, by a checkpoint or by a bitmap nobody owns.
    daemon
        .virsh(&["checkpoint-create-as", "cpvm", "cp1", "--diskspec", "vda"])
        .fails_with("error: operation failed: domain moment cp1 already exists");
    daemon
        .virsh(&[
            "qemu-monitor-command",
            "cpvm",
            r#"{"execute":"block-dirty-bitmap-add","arguments":{"node":"libvirt-3-format","name":"taken","persistent":true}}"#,
        ])
        .ok();
    daemon
        .virsh(&["checkpoint-create-as", "cpvm", "taken", "--diskspec", "vda", "--diskspec", "vdb"])
        .fails_with(
            "error: internal error: unable to execute QEMU command 'transaction': Bitmap already exists: taken",
        );
    // Deleting what is not there.
    same_as(
        &daemon.virsh_loud(&["checkpoint-delete", "cpvm", "nosuch"]),
        "err-delete-unknown",
        &[],
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-info", "cpvm", "nosuch"]),
        "err-info-unknown",
        &[],
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-list", "cpvm", "--from", "nosuch"]),
        "err-list-from-unknown",
        &[],
    );

    // Nothing of the failures stayed: one checkpoint, its bitmaps, the
    // foreign bitmap, one metadata file.
    assert_eq!(
        daemon
            .virsh(&["checkpoint-list", "cpvm", "--name"])
            .ok()
            .stdout
            .trim(),
        "cp1"
    );
    assert_eq!(live_names(&daemon, VDA), strings(&["cp1", "taken"]));
    assert_eq!(live_names(&daemon, VDB), strings(&["cp1"]));
    assert_eq!(metadata_files(&daemon), ["cp1.xml"]);

    // Names libvirt cannot store (its metadata file name grows too long
    // past 251 bytes) work here.
    let long = "n".repeat(600);
    daemon
        .virsh(&["checkpoint-create-as", "cpvm", &long, "--diskspec", "vda"])
        .ok();
    assert_eq!(
        daemon
            .virsh(&["checkpoint-parent", "cpvm", &long])
            .ok()
            .stdout
            .trim(),
        "cp1"
    );
    daemon.virsh(&["checkpoint-delete", "cpvm", &long]).ok();
    daemon
        .virsh(&["checkpoint-delete", "cpvm", &long])
        .fails_with(&format!(
            "error: Domain checkpoint not found: no domain checkpoint with matching name '{long}'"
        ));
    assert_eq!(live_names(&daemon, VDA), strings(&["cp1", "taken"]));
    let _ = dir;
}

/// The metadata files of the one domain in the daemon's state directory.
fn metadata_files(daemon: &Daemon) -> Vec<String> {
    let root = daemon.path("state").join("checkpoints");
    let mut names = Vec::new();
    for dom in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dom.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            names.push(f.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    names
}

#[test]
fn delete_flags_move_children_and_current_like_libvirt() {
    let daemon = Daemon::start();
    define_cpvm(&daemon, true);
    daemon.virsh(&["start", "cpvm"]).ok();
    let create = |name: &str| {
        daemon.virsh(&["checkpoint-create-as", "cpvm", name]).ok();
    };
    let tree = || {
        daemon
            .virsh(&["checkpoint-list", "cpvm", "--tree"])
            .ok()
            .stdout
    };
    let parent = |name: &str| {
        daemon
            .virsh(&["checkpoint-parent", "cpvm", name])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    for name in ["a", "b", "c"] {
        create(name);
    }
    // The default <disks> skip the read-only vdc.
    let xml = daemon
        .virsh(&["checkpoint-dumpxml", "cpvm", "a", "--no-domain"])
        .ok()
        .stdout;
    assert!(xml.contains("<disk name='vdc' checkpoint='no'/>"), "{xml}");

    // A middle one: its child moves up, its bitmaps go.
    let run = daemon.virsh_loud(&["checkpoint-delete", "cpvm", "b"]).ok();
    assert_eq!(run.stdout.trim(), "Domain checkpoint b deleted");
    assert_eq!(parent("c"), "a");
    assert_eq!(live_names(&daemon, VDA), strings(&["a", "c"]));
    // New checkpoints hang under the current one (c).
    create("d");
    assert_eq!(parent("d"), "c");

    // --children: c and d go, a becomes current again.
    daemon
        .virsh(&["checkpoint-delete", "cpvm", "c", "--children"])
        .ok();
    assert_eq!(tree().trim_end(), "a");
    create("e");
    assert_eq!(parent("e"), "a");
    create("f");
    // --children-only keeps a, and a is current.
    daemon
        .virsh(&["checkpoint-delete", "cpvm", "a", "--children-only"])
        .ok();
    assert_eq!(live_names(&daemon, VDA), strings(&["a"]));
    create("g");
    assert_eq!(parent("g"), "a");
    // --metadata: the metadata goes, the bitmaps stay.
    daemon
        .virsh(&["checkpoint-delete", "cpvm", "a", "--children", "--metadata"])
        .ok();
    assert_eq!(tree().trim(), "");
    assert_eq!(live_names(&daemon, VDA), strings(&["a", "g"]));
    assert!(metadata_files(&daemon).is_empty());
    // Deleting the current leaf leaves its parent current.
    create("h");
    create("i");
    daemon.virsh(&["checkpoint-delete", "cpvm", "i"]).ok();
    create("j");
    assert_eq!(parent("j"), "h");
}

#[test]
fn a_libvirtd_chain_is_taken_over_with_redefine() {
    let daemon = Daemon::start();
    let dir = define_cpvm(&daemon, false);
    // Images as libvirtd left them (see the reference README).
    for (image, names) in [
        ("vda.qcow2", &["cp1", "cp2", C3][..]),
        ("vdb.qcow2", &["cp1", C3]),
    ] {
        for name in names {
            let out = Command::new("qemu-img")
                .args(["bitmap", "--add"])
                .arg(dir.join(image))
                .arg(name)
                .output()
                .unwrap();
            assert!(out.status.success());
        }
    }
    let chain = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(REFERENCE)
        .join("libvirtd-chain");
    for (name, capture_name) in [
        ("cp1", "inactive-redefine-cp1"),
        ("cp2", "inactive-redefine-cp2"),
        (C3, "inactive-redefine-c3"),
    ] {
        let file = chain.join(format!("{name}.xml"));
        let run = daemon.virsh_loud(&[
            "checkpoint-create",
            "cpvm",
            file.to_str().unwrap(),
            "--redefine",
        ]);
        same_as(
            &run,
            capture_name,
            &[(chain.to_str().unwrap(), "libvirtd-chain")],
        );
    }
    same_as(
        &daemon.virsh_loud(&["checkpoint-list", "cpvm", "--tree"]),
        "list-tree",
        &[],
    );
    same_as(
        &daemon.virsh_loud(&["checkpoint-dumpxml", "cpvm", "cp2", "--no-domain"]),
        "dumpxml-cp2-no-domain",
        &[],
    );
    // What we store is libvirtd's file but for <backingStore/>.
    let ours = std::fs::read_dir(daemon.path("state").join("checkpoints"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("cp2.xml");
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.contains("<backingStore/>"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&std::fs::read_to_string(ours).unwrap()),
        strip(&reference_file("libvirtd-chain/cp2.xml"))
    );

    // Running: validation finds the bitmaps QEMU loaded from the images;
    // a checkpoint whose bitmap is not there is refused.
    daemon.virsh(&["start", "cpvm"]).ok();
    let file = chain.join(format!("{C3}.xml"));
    daemon
        .virsh(&[
            "checkpoint-create",
            "cpvm",
            file.to_str().unwrap(),
            "--redefine",
            "--redefine-validate",
        ])
        .ok();
    let bogus = reference_file("libvirtd-chain/cp2.xml")
        .replace("<name>cp2</name>", "<name>cpx</name>")
        .replace("bitmap='cp2'", "bitmap='cpx'");
    std::fs::write(daemon.path("cpx.xml"), bogus).unwrap();
    let cpx = daemon.path("cpx.xml");
    daemon
        .virsh(&[
            "checkpoint-create",
            "cpvm",
            cpx.to_str().unwrap(),
            "--redefine",
            "--redefine-validate",
        ])
        .fails_with(
            "error: checkpoint inconsistent: missing or broken bitmap 'cpx' for disk 'vda'",
        );
    assert!(daemon.virsh(&["checkpoint-info", "cpvm", "cpx"]).code != 0);

    // The taken-over chain works on: sizes, new checkpoints, deletes.
    guest_write(&daemon, 0, "write 0 1M");
    let xml = daemon
        .virsh(&["checkpoint-dumpxml", "cpvm", "cp1", "--size", "--no-domain"])
        .ok()
        .stdout;
    assert!(xml.contains("bitmap='cp1' size='1048576'"), "{xml}");
    daemon
        .virsh(&["checkpoint-create-as", "cpvm", "cp4", "--diskspec", "vda"])
        .ok();
    assert_eq!(
        daemon
            .virsh(&["checkpoint-parent", "cpvm", "cp4"])
            .ok()
            .stdout
            .trim(),
        C3
    );
    daemon.virsh(&["checkpoint-delete", "cpvm", "cp2"]).ok();
    daemon.virsh(&["destroy", "cpvm"]).ok();
    assert_eq!(
        image_names(&dir.join("vda.qcow2")),
        strings(&[C3, "cp1", "cp4"])
    );
    assert_eq!(image_names(&dir.join("vdb.qcow2")), strings(&[C3, "cp1"]));
}

#[test]
fn restarts_and_crashes_keep_metadata_and_bitmaps_in_step() {
    let mut daemon = Daemon::start();
    let dir = define_cpvm(&daemon, true);
    daemon.virsh(&["start", "cpvm"]).ok();
    for name in ["cp1", "cp2"] {
        daemon.virsh(&["checkpoint-create-as", "cpvm", name]).ok();
    }
    let uuid = daemon
        .virsh(&["domuuid", "cpvm"])
        .ok()
        .stdout
        .trim()
        .to_string();

    // A daemon that died between adding a bitmap and writing its metadata
    // left an intent record and the bitmap; the next daemon removes it.
    daemon
        .virsh(&[
            "qemu-monitor-command",
            "cpvm",
            r#"{"execute":"block-dirty-bitmap-add","arguments":{"node":"libvirt-3-format","name":"stray","persistent":true}}"#,
        ])
        .ok();
    std::fs::write(
        daemon
            .path("state")
            .join("checkpoints")
            .join(&uuid)
            .join("stray.intent"),
        r#"{"checkpoint":"stray","action":"Create","bitmaps":[["vda","stray"]]}"#,
    )
    .unwrap();
    daemon.restart();
    assert_eq!(live_names(&daemon, VDA), strings(&["cp1", "cp2"]));
    assert_eq!(metadata_files(&daemon), ["cp1.xml", "cp2.xml"]);
    daemon
        .virsh(&["checkpoint-create-as", "cpvm", "stray"])
        .ok();
    // The tree and the current checkpoint survived the restart.
    assert_eq!(
        daemon
            .virsh(&["checkpoint-parent", "cpvm", "stray"])
            .ok()
            .stdout
            .trim(),
        "cp2"
    );

    // QEMU killed: bitmaps made in this run were never written to the
    // images, the ones loaded at its start come back inconsistent.
    // Reported, not dropped.
    daemon.virsh(&["destroy", "cpvm"]).ok();
    daemon.virsh(&["start", "cpvm"]).ok();
    daemon.virsh(&["checkpoint-create-as", "cpvm", "cp3"]).ok();
    for pid in daemon.qemu_pids() {
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    common::wait_until(std::time::Duration::from_secs(10), || {
        daemon.virsh(&["domstate", "cpvm"]).stdout.trim() == "shut off"
    })
    .expect("domain noticed the kill");
    let stored = image_bitmaps(&dir.join("vda.qcow2"));
    assert_eq!(
        stored.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
        ["cp1", "cp2", "stray"]
    );
    assert!(
        stored.iter().all(|b| b.1.contains(&"in-use".to_string())),
        "{stored:?}"
    );
    daemon.virsh(&["start", "cpvm"]).ok();
    let info = daemon.virsh(&["dominfo", "cpvm"]).ok().stdout;
    assert!(
        info.contains("checkpoint 'cp3': bitmap 'cp3' of disk 'vda' is missing"),
        "{info}"
    );
    assert!(
        info.contains("checkpoint 'cp1': bitmap 'cp1' of disk 'vda' is inconsistent"),
        "{info}"
    );
    assert_eq!(
        words(
            &daemon
                .virsh(&["checkpoint-list", "cpvm", "--name", "--topological"])
                .ok()
                .stdout
        ),
        "cp1 cp2 stray cp3"
    );
    daemon
        .virsh(&["checkpoint-delete", "cpvm", "cp3"])
        .fails_with("error: internal error: bitmap 'cp3' not found in backing chain of 'vda'");
    daemon
        .virsh(&["checkpoint-delete", "cpvm", "cp3", "--metadata"])
        .ok();
    // Broken bitmaps can still be deleted with their checkpoint.
    daemon.virsh(&["checkpoint-delete", "cpvm", "cp2"]).ok();
    daemon.virsh(&["checkpoint-create-as", "cpvm", "cp4"]).ok();
    assert_eq!(
        daemon
            .virsh(&["checkpoint-parent", "cpvm", "cp4"])
            .ok()
            .stdout
            .trim(),
        "stray"
    );
    assert_eq!(
        daemon
            .virsh(&["checkpoint-parent", "cpvm", "stray"])
            .ok()
            .stdout
            .trim(),
        "cp1"
    );
    // A clean stop leaves the images and the metadata in agreement.
    daemon.virsh(&["destroy", "cpvm"]).ok();
    assert_eq!(
        image_names(&dir.join("vda.qcow2")),
        strings(&["cp1", "cp4", "stray"])
    );
}

#[test]
fn concurrent_creates_and_a_racing_destroy_stay_consistent() {
    let daemon = Daemon::start();
    let dir = define_cpvm(&daemon, true);
    daemon.virsh(&["start", "cpvm"]).ok();
    // Two clients create ten checkpoints each at the same time.
    let script = r#"
import libvirt, os, threading
errors = []
def worker(prefix):
    c = libvirt.open(os.environ["URI"]); d = c.lookupByName("cpvm")
    for i in range(10):
        try:
            d.checkpointCreateXML("<domaincheckpoint><name>%s%d</name></domaincheckpoint>" % (prefix, i))
        except libvirt.libvirtError as e:
            errors.append(str(e))
ts = [threading.Thread(target=worker, args=(p,)) for p in "ab"]
[t.start() for t in ts]; [t.join() for t in ts]
print(errors)
"#;
    assert_eq!(daemon.python_quiet(script).ok().stdout.trim(), "[]");
    // They form one chain: each one's parent is the one made before it.
    let names = daemon
        .virsh(&["checkpoint-list", "cpvm", "--name", "--topological"])
        .ok()
        .stdout;
    let names: Vec<&str> = names.split_whitespace().collect();
    assert_eq!(names.len(), 20);
    for pair in names.windows(2) {
        assert_eq!(
            daemon
                .virsh(&["checkpoint-parent", "cpvm", pair[1]])
                .ok()
                .stdout
                .trim(),
            pair[0]
        );
    }
    assert_eq!(live_names(&daemon, VDA).len(), 20);

    // Creates racing a destroy: each one either happens whole or fails
    // with libvirt's error, and the images end up holding exactly the
    // bitmaps of the checkpoints the metadata lists.
    let script = r#"
import libvirt, os, threading
c = libvirt.open(os.environ["URI"]); d = c.lookupByName("cpvm")
seen = set()
def creator():
    c2 = libvirt.open(os.environ["URI"]); d2 = c2.lookupByName("cpvm")
    for i in range(30):
        try:
            d2.checkpointCreateXML("<domaincheckpoint><name>r%d</name></domaincheckpoint>" % i)
        except libvirt.libvirtError as e:
            seen.add(e.get_error_message())
t = threading.Thread(target=creator); t.start()
d.destroy(); t.join()
print(sorted(seen))
"#;
    let run = daemon.python_quiet(script).ok();
    let allowed = [
        "Operation not supported: cannot create checkpoint for inactive domain",
        "Requested operation is not valid: domain is not running",
    ];
    let seen = run.stdout.trim();
    assert!(
        allowed.iter().any(|a| seen.contains(a)) || seen == "[]",
        "{seen}"
    );
    let listed = daemon
        .virsh(&["checkpoint-list", "cpvm", "--name"])
        .ok()
        .stdout;
    let mut listed: Vec<String> = listed.split_whitespace().map(str::to_string).collect();
    listed.sort();
    assert_eq!(image_names(&dir.join("vda.qcow2")), listed);
    assert_eq!(image_names(&dir.join("vdb.qcow2")), listed);
}

#[test]
fn undefine_edit_and_read_only_access() {
    let daemon = Daemon::start();
    define_cpvm(&daemon, true);
    daemon.virsh(&["start", "cpvm"]).ok();
    daemon
        .virsh(&["checkpoint-create-as", "cpvm", "cp1", "first checkpoint"])
        .ok();
    daemon.virsh(&["checkpoint-create-as", "cpvm", "cp2"]).ok();
    assert_eq!(
        daemon
            .virsh(&["list", "--name", "--with-checkpoint"])
            .ok()
            .stdout
            .trim(),
        "cpvm"
    );
    assert_eq!(
        daemon
            .virsh(&["list", "--name", "--without-checkpoint"])
            .ok()
            .stdout
            .trim(),
        ""
    );

    // checkpoint-edit is a redefine; renaming is refused by virsh itself.
    let editor = |script: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(REFERENCE)
            .join(script);
        path.to_str().unwrap().to_string()
    };
    let run = Command::new("virsh")
        .args(["-c", &daemon.uri(), "checkpoint-edit", "cpvm", "cp1"])
        .env("EDITOR", editor("edit-desc.sh"))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "Checkpoint cp1 edited."
    );
    let xml = daemon
        .virsh(&["checkpoint-dumpxml", "cpvm", "cp1", "--no-domain"])
        .ok()
        .stdout;
    assert!(
        xml.contains("<description>edited description</description>"),
        "{xml}"
    );
    assert_eq!(
        daemon
            .virsh(&["checkpoint-parent", "cpvm", "cp2"])
            .ok()
            .stdout
            .trim(),
        "cp1"
    );
    let run = Command::new("virsh")
        .args(["-c", &daemon.uri(), "checkpoint-edit", "cpvm", "cp2"])
        .env("EDITOR", editor("edit-name.sh"))
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        capture("err-edit-rename").1
    );
    assert_eq!(
        words(
            &daemon
                .virsh(&["checkpoint-list", "cpvm", "--name"])
                .ok()
                .stdout
        ),
        "cp1 cp2"
    );

    // Read-only: looking is fine, changing is not.
    let ro = daemon.uri_ro();
    assert_eq!(
        words(
            &daemon
                .virsh_at(&ro, &["checkpoint-list", "cpvm", "--name"])
                .ok()
                .stdout
        ),
        "cp1 cp2"
    );
    daemon
        .virsh_at(&ro, &["checkpoint-create-as", "cpvm", "cp3"])
        .fails_with(
            "error: operation forbidden: read only access prevents virDomainCheckpointCreateXML",
        );
    daemon
        .virsh_at(
            &ro,
            &["checkpoint-dumpxml", "cpvm", "cp1", "--security-info"],
        )
        .fails_with("error: operation forbidden: virDomainCheckpointGetXMLDesc with secure flag");

    // A running domain undefined keeps its checkpoints until it stops.
    daemon.virsh(&["undefine", "cpvm"]).ok();
    assert_eq!(
        words(
            &daemon
                .virsh(&["checkpoint-list", "cpvm", "--name"])
                .ok()
                .stdout
        ),
        "cp1 cp2"
    );
    daemon.virsh(&["destroy", "cpvm"]).ok();
    assert!(metadata_files(&daemon).is_empty());

    // Inactive with checkpoints: refused unless their metadata may go.
    define_cpvm(&daemon, true);
    daemon.virsh(&["start", "cpvm"]).ok();
    for name in ["a", "b", "c"] {
        daemon.virsh(&["checkpoint-create-as", "cpvm", name]).ok();
    }
    daemon.virsh(&["destroy", "cpvm"]).ok();
    same_as(
        &daemon.virsh_loud(&["undefine", "cpvm"]),
        "err-undefine-with-checkpoints",
        &[],
    );
    same_as(
        &daemon.virsh_loud(&["undefine", "cpvm", "--checkpoints-metadata"]),
        "undefine-checkpoints-metadata",
        &[],
    );
    assert!(metadata_files(&daemon).is_empty());
    define_cpvm(&daemon, true);
    assert_eq!(
        daemon
            .virsh(&["checkpoint-list", "cpvm", "--name"])
            .ok()
            .stdout
            .trim(),
        ""
    );
}
