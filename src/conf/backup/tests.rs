//! Tests of the backup model.
//!
//! - `fixtures/backup/schema/NAME.xml` must be judged by the schema check
//!   exactly as `NAME.schema` says (libxml2's messages, empty when valid;
//!   `gen.sh` there regenerates them with `xmllint`).
//! - `fixtures/backup/in/NAME.xml` is parsed, aligned and prepared as
//!   backup-begin does it; the job formatted as backup-dumpxml shows it
//!   must equal `out/NAME.xml`.
//! - `fixtures/backup/err/NAME.xml` must fail with the triple in
//!   `err/NAME.err`.
//!
//!   The first line of a leading comment in the input sets up the case
//!   (see `Case::from_directives`). Without it: the captures' `bkvm`
//!   (`domain.xml`), suffix [`NOW`], checkpoints `cp1` and `cp2` whose
//!   bitmaps exist on every qcow2 disk, storage ids counted on from the
//!   domain's disks.
//!
//!   `BLESS_BACKUP_FIXTURES=1 cargo test` rewrites `out/` and the `.err`
//!   files from what the model does: review the diff before committing.

mod reference;

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::conf::error::ConfErrorKind;
use crate::conf::test_support::{describe, fixtures, libvirt_message, read, NOW};
use crate::conf::xml::{self, Limits};

fn domain(file: &str) -> DomainDef {
    crate::conf::test_support::domain("backup", file)
}

/// A stand-in for the driver: a checkpoint list, bitmaps on every qcow2
/// disk except the `broken` ones, a storage id counter.
struct FakeEnv {
    checkpoints: Vec<String>,
    broken: Vec<String>,
    next_id: u32,
}

impl BackupEnv for FakeEnv {
    fn new_storage_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn checkpoint_exists(&self, name: &str) -> bool {
        self.checkpoints.iter().any(|c| c == name)
    }

    fn bitmap_chain_valid(&self, disk: &DiskDef, checkpoint: &str) -> bool {
        self.checkpoint_exists(checkpoint)
            && *disk.format() == DiskFormat::Qcow2
            && !self.broken.iter().any(|b| b == disk.target())
    }
}

/// How a fixture runs, from its leading comment's first line:
/// `domain=FILE`, `checkpoint=NAME` (a checkpoint is created with the
/// backup: it names default targets), `checkpoints=a,b` (those that
/// exist), `broken=vda,vdb` (disks whose bitmaps are unusable),
/// `stage=align` (stop after alignment, as if QEMU were not there).
struct Case {
    domain: String,
    suffix: String,
    env: FakeEnv,
    align_only: bool,
}

impl Case {
    fn from_directives(xml: &str) -> Self {
        let line = xml
            .trim_start()
            .strip_prefix("<!--")
            .and_then(|rest| rest.split_once("-->"))
            .and_then(|(d, _)| d.lines().next())
            .unwrap_or("");
        let get = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        let list = |v: Option<&str>, default: &[&str]| -> Vec<String> {
            v.map_or_else(
                || default.iter().map(|s| (*s).to_owned()).collect(),
                |v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                },
            )
        };
        Case {
            domain: get("domain").unwrap_or("domain.xml").to_owned(),
            suffix: default_suffix(get("checkpoint"), NOW),
            env: FakeEnv {
                checkpoints: list(get("checkpoints"), &["cp1", "cp2"]),
                broken: list(get("broken"), &[]),
                next_id: 0,
            },
            align_only: get("stage") == Some("align"),
        }
    }

    fn run(mut self, xml: &str) -> Result<BackupDef, ConfError> {
        let dom = domain(&self.domain);
        self.env.next_id = u32::try_from(dom.disks().len()).expect("few disks");
        let mut def = BackupDef::parse(xml)?.align(&dom, &self.suffix)?;
        if !self.align_only {
            def.prepare_server()?;
            def.prepare_disks(&dom, &mut self.env)?;
        }
        Ok(def)
    }
}

fn run_case(xml: &str) -> Result<BackupDef, ConfError> {
    Case::from_directives(xml).run(xml)
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(fixtures().join("backup").join(dir))
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|s| s.to_str()).unwrap_or_default()
}

#[test]
fn schema_matches_libxml2() {
    let cases = files("schema", "xml");
    assert!(cases.len() > 100, "the corpus is there");
    for case in cases {
        let doc = read(&case);
        let want = read(&case.with_extension("schema"));
        let root = xml::parse(&doc, "(domain_backup)", &Limits::default()).expect("well-formed");
        let got = match schema::validate(&root) {
            Ok(()) => String::new(),
            Err(e) => e
                .detail()
                .and_then(|d| d.split_once('\n'))
                .map(|(_, lines)| lines.to_owned())
                .unwrap_or_default(),
        };
        assert_eq!(got, want, "{}", file_name(&case));
    }
}

#[test]
fn golden_in_out() {
    let inputs = files("in", "xml");
    assert!(!inputs.is_empty());
    for input in inputs {
        let name = file_name(&input);
        let def = run_case(&read(&input)).unwrap_or_else(|e| panic!("{name}: {}", describe(&e)));
        let out = fixtures().join("backup/out").join(name);
        if std::env::var_os("BLESS_BACKUP_FIXTURES").is_some() {
            fs::write(&out, def.format()).expect("bless");
        }
        assert_eq!(def.format(), read(&out), "{name}");
    }
}

#[test]
fn errors_match_sidecars() {
    let inputs = files("err", "xml");
    assert!(!inputs.is_empty());
    for input in inputs {
        let got = run_case(&read(&input)).expect_err(&format!("{} should fail", file_name(&input)));
        if std::env::var_os("BLESS_BACKUP_FIXTURES").is_some() {
            fs::write(input.with_extension("err"), describe(&got)).expect("bless");
        }
        let want = read(&input.with_extension("err"));
        assert_eq!(describe(&got), want, "{}", file_name(&input));
    }
}

#[test]
fn accessors_give_what_the_driver_needs() {
    let xml = "<domainbackup mode='pull'><incremental>cp1</incremental>\
        <server transport='unix' socket='/run/bk.sock'/><disks>\
        <disk name='vdb' type='block'><scratch dev='/dev/vg/s'/></disk>\
        <disk name='vda' backupmode='full'><scratch file='/s/a'/></disk>\
        </disks></domainbackup>";
    let parsed = BackupDef::parse(xml).expect("parses");
    assert_eq!(parsed.mode(), BackupMode::Pull);
    let dom = domain("domain.xml");
    let mut def = parsed.align(&dom, "1").expect("aligns");
    def.prepare_server().expect("unix needs no port");
    let mut env = FakeEnv {
        checkpoints: vec!["cp1".to_owned()],
        broken: Vec::new(),
        next_id: 3,
    };
    def.prepare_disks(&dom, &mut env).expect("prepares");

    assert_eq!(def.incremental(), Some("cp1"));
    let server = def.server().expect("server");
    assert_eq!(
        (
            server.transport(),
            server.socket(),
            server.port(),
            server.tls()
        ),
        (Transport::Unix, Some("/run/bk.sock"), None, None)
    );
    let names: Vec<_> = def.disks().iter().map(BackupDisk::name).collect();
    assert_eq!(names, ["vdb", "vda", "vdc"]);

    let vdb = def.disk("vdb").expect("vdb");
    let store = vdb.store().expect("backed up");
    assert!(vdb.backup() && store.is_block() && store.kind() == StoreType::Block);
    assert_eq!(
        (store.path(), store.format(), store.index()),
        (Some("/dev/vg/s"), Some(&DiskFormat::Qcow2), Some(4))
    );
    assert_eq!(vdb.backup_mode(), DiskBackupMode::Incremental);
    assert_eq!(
        (
            vdb.incremental(),
            vdb.bitmap(),
            vdb.export_bitmap(),
            vdb.export_name()
        ),
        (
            Some("cp1"),
            Some("backup-vdb"),
            Some("backup-vdb"),
            Some("vdb")
        )
    );

    let vda = def.disk("vda").expect("vda");
    assert_eq!(vda.backup_mode(), DiskBackupMode::Full);
    assert_eq!((vda.incremental(), vda.bitmap()), (None, None));
    assert!(!def.disk("vdc").expect("vdc").backup());
    assert_eq!(def.backed_up().count(), 2);
}

#[test]
fn default_targets_skip_read_only_and_empty_disks() {
    // domain-mixed without its block disk: a writable image, a read-only
    // one and an empty cdrom.
    let text = read(&fixtures().join("backup/domain-mixed.xml"));
    let start = text.find("<disk type='block'").expect("block disk");
    let end = start + text[start..].find("</disk>").expect("end") + "</disk>".len();
    let dom = DomainDef::parse(&format!("{}{}", &text[..start], &text[end..])).expect("domain");
    let def = BackupDef::parse("<domainbackup/>")
        .and_then(|p| p.align(&dom, &default_suffix(None, 42)))
        .expect("aligns");
    let disks: Vec<_> = def
        .disks()
        .iter()
        .map(|d| (d.name(), d.store().and_then(BackupStore::path)))
        .collect();
    assert_eq!(
        disks,
        [
            ("vda", Some("/var/lib/images/sys.qcow2.42")),
            ("vdc", None),
            ("sda", None)
        ]
    );
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let e = BackupDef::parse(&"<a>".repeat(100_000)).expect_err("deep");
    assert_eq!(
        (e.kind(), e.domain().code()),
        (ConfErrorKind::XmlDetail, 20)
    );
    // More disks than the domain has: each is looked up once, the first
    // duplicate stops it.
    let many = format!(
        "<domainbackup><disks>{}</disks></domainbackup>",
        "<disk name='vda' type='file'/>".repeat(50_000)
    );
    let e = BackupDef::parse(&many)
        .and_then(|p| p.align(&domain("domain.xml"), "1"))
        .expect_err("many");
    assert_eq!(
        libvirt_message(&e),
        "unsupported configuration: disk 'vda' specified twice"
    );
}
