//! Unit tests of `store.rs`.

use super::*;

#[test]
fn configs_round_trip_and_are_named_by_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
    let uuid = [7u8; 16];
    store.save_config(&uuid, "<domain/>").unwrap();
    let configs = store.load_configs().unwrap();
    assert_eq!(configs.len(), 1);
    assert!(configs[0]
        .0
        .ends_with("07070707-0707-0707-0707-070707070707.xml"));
    assert_eq!(configs[0].1.as_deref().unwrap(), "<domain/>");
    store.delete_config(&uuid).unwrap();
    store.delete_config(&uuid).unwrap();
    assert!(store.load_configs().unwrap().is_empty());
}

#[test]
fn long_names_get_a_bounded_distinct_file_name() {
    let a = file_stem(&"a".repeat(1023));
    let b = file_stem(&format!("{}b", "a".repeat(1022)));
    assert!(a.len() <= STEM_MAX && b.len() <= STEM_MAX);
    assert_ne!(a, b);
    assert_eq!(file_stem(&"a".repeat(200)), "a".repeat(200));
}

#[test]
fn hostile_names_stay_one_harmless_path_component() {
    assert_eq!(encode_name("cp1"), "cp1");
    assert_eq!(encode_name(".."), "%2E%2E");
    assert_eq!(encode_name("a/b"), "a%2Fb");
    assert_eq!(encode_name("virtnbdbackup.0"), "virtnbdbackup%2E0");
    assert_ne!(encode_name("a%2Fb"), encode_name("a/b"));
}

#[test]
fn checkpoints_and_intents_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
    let uuid = [3u8; 16];
    store
        .save_checkpoint(&uuid, "../c", "<domaincheckpoint/>")
        .unwrap();
    let intent = Intent {
        checkpoint: "../c".into(),
        action: IntentAction::Create,
        bitmaps: vec![("vda".into(), "../c".into())],
    };
    store.save_intent(&uuid, &intent).unwrap();
    assert_eq!(store.load_checkpoints(&uuid).len(), 1);
    assert_eq!(store.load_intents(&uuid)[0].1.as_ref().unwrap(), &intent);
    store.delete_intent(&uuid, "../c").unwrap();
    store.delete_checkpoint(&uuid, "../c").unwrap();
    assert!(store.load_checkpoints(&uuid).is_empty());
    let long = ".".repeat(1023);
    store.save_checkpoint(&uuid, &long, "<long/>").unwrap();
    assert_eq!(store.load_checkpoints(&uuid).len(), 1);
    store.delete_checkpoint(&uuid, &long).unwrap();
    store.delete_all_checkpoints(&uuid).unwrap();
}

#[test]
fn live_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
    let uuid = [1u8; 16];
    let record = LiveRecord {
        id: 3,
        persistent: true,
        state: 1,
        reason: 1,
        xml: "<domain/>".into(),
        nodes: Vec::new(),
        overlays: Vec::new(),
        next_node: 0,
    };
    store.save_live(&uuid, &record).unwrap();
    let loaded = store.load_live();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].1.as_ref().unwrap().id, 3);
    store.delete_live(&uuid);
    assert!(store.load_live().is_empty());
}

#[test]
fn snapshot_intents_round_trip_beside_the_metadata_and_are_not_read_as_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state"), &dir.path().join("run")).unwrap();
    let uuid = [5u8; 16];
    let intent = SnapshotIntent {
        snapshot: "../s1".into(),
        action: SnapshotAction::ExternalCreate,
        nodes: vec![1, 2],
        images: vec![PathBuf::from("/images/vda.qcow2")],
        paused_by_us: true,
        overlays: vec![IntentOverlay {
            disk: "vda".into(),
            path: PathBuf::from("/images/vda.s1"),
            node_index: 3,
            base: 1,
            block: false,
            created: true,
            active: 0,
            above: None,
            base_layer: None,
        }],
        metadata: Some("<domainsnapshot/>".into()),
    };
    store.save_snapshot_intent(&uuid, &intent).unwrap();
    assert!(store.load_snapshots(&uuid).is_empty());
    assert_eq!(
        store.load_snapshot_intents(&uuid)[0].1.as_ref().unwrap(),
        &intent
    );
    store.delete_snapshot_intent(&uuid, "../s1").unwrap();
    assert!(store.load_snapshot_intents(&uuid).is_empty());
}

#[test]
fn a_killed_writes_temporary_file_goes_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let (state, run) = (dir.path().join("state"), dir.path().join("run"));
    let store = Store::open(&state, &run).unwrap();
    store.save_config(&[9u8; 16], "<domain/>").unwrap();
    let domain_run = run.join("09090909-0909-0909-0909-090909090909");
    fs::create_dir_all(&domain_run).unwrap();
    let stale = [
        domain_run.join(".domain.json.tmp"),
        state.join("domains").join(".x.xml.tmp"),
    ];
    for path in &stale {
        fs::write(path, "half").unwrap();
    }
    fs::write(domain_run.join("qemu.log"), "kept").unwrap();
    drop(store);
    Store::open(&state, &run).unwrap();
    for path in &stale {
        assert!(!path.exists(), "{} stayed", path.display());
    }
    assert!(domain_run.join("qemu.log").exists());
    assert_eq!(store_configs(&state, &run), 1);
}

fn store_configs(state: &Path, run: &Path) -> usize {
    Store::open(state, run)
        .unwrap()
        .load_configs()
        .unwrap()
        .len()
}
