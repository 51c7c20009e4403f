//! Unit tests of `wire.rs`.

use super::*;
use crate::xdr::{from_bytes, to_bytes, Pack, Unpack, XdrError};

/// Hex digits of a fixture, `#` comments and whitespace ignored.
fn fixture(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.bytes().filter(u8::is_ascii_hexdigit))
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Decodes `bytes`, compares with `want`, and encodes back to `bytes`.
fn check<T: Pack + Unpack + PartialEq + std::fmt::Debug>(bytes: &[u8], want: &T) {
    assert_eq!(&from_bytes::<T>(bytes).unwrap(), want);
    assert_eq!(to_bytes(want).unwrap(), bytes);
}

fn vm1() -> remote_nonnull_domain {
    remote_nonnull_domain {
        name: "vm1".into(),
        uuid: [
            0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
            0x1e, 0x1f,
        ],
        id: 3,
    }
}

#[test]
fn connect_open_args_fixture() {
    let bytes = fixture(include_str!("../../fixtures/wire/connect_open_args.hex"));
    let want = remote_connect_open_args {
        name: Some("qemu:///system".into()),
        flags: 0,
    };
    check(&bytes, &want);
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_eq!(
        from_bytes::<remote_connect_open_args>(&longer),
        Err(XdrError::TrailingBytes(4))
    );
}

#[test]
fn remote_error_fixture() {
    let bytes = fixture(include_str!(
        "../../fixtures/wire/remote_error_no_domain.hex"
    ));
    let want = remote_error {
        code: 42,
        domain: 10,
        message: Some("Domain not found: no domain with matching name 'nosuchdom'".into()),
        level: 2,
        dom: None,
        str1: Some("Domain not found: %s".into()),
        str2: Some("no domain with matching name 'nosuchdom'".into()),
        str3: None,
        int1: -1,
        int2: -1,
        net: None,
    };
    check(&bytes, &want);
}

#[test]
fn job_stats_fixture() {
    let bytes = fixture(include_str!(
        "../../fixtures/wire/domain_get_job_stats_ret.hex"
    ));
    let param = |field: &str, value| remote_typed_param {
        field: field.into(),
        value,
    };
    let want = remote_domain_get_job_stats_ret {
        r#type: 3,
        params: vec![
            param("operation", remote_typed_param_value::Int(9)),
            param("time_elapsed", remote_typed_param_value::Ullong(1234)),
            param("success", remote_typed_param_value::Boolean(1)),
            param(
                "errmsg",
                remote_typed_param_value::String("Operation canceled".into()),
            ),
        ],
    };
    check(&bytes, &want);
}

#[test]
fn list_all_checkpoints_fixture() {
    let bytes = fixture(include_str!(
        "../../fixtures/wire/domain_list_all_checkpoints_ret.hex"
    ));
    let cp = |name: &str| remote_nonnull_domain_checkpoint {
        name: name.into(),
        dom: vm1(),
    };
    let want = remote_domain_list_all_checkpoints_ret {
        checkpoints: vec![cp("cp1"), cp("cp2")],
        ret: 2,
    };
    check(&bytes, &want);
}

#[test]
fn frame_header_fixture() {
    let bytes = fixture(include_str!("../../fixtures/wire/frame_auth_list_call.hex"));
    let (len, header) = bytes.split_at(VIR_NET_MESSAGE_LEN_MAX as usize);
    assert_eq!(from_bytes::<u32>(len).unwrap() as usize, bytes.len());
    assert_eq!(header.len(), VIR_NET_MESSAGE_HEADER_MAX as usize);
    let want = virNetMessageHeader {
        prog: REMOTE_PROGRAM,
        vers: REMOTE_PROTOCOL_VERSION,
        proc: REMOTE_PROC_AUTH_LIST,
        r#type: VIR_NET_CALL,
        serial: 0,
        status: VIR_NET_OK,
    };
    check(header, &want);
}

#[test]
fn narrow_fields_take_a_word_each() {
    let info = remote_domain_get_info_ret {
        state: 1,
        maxMem: 1 << 20,
        memory: 1 << 19,
        nrVirtCpu: 2,
        cpuTime: 7,
    };
    let bytes = to_bytes(&info).unwrap();
    assert_eq!(bytes.len(), 4 + 8 + 8 + 4 + 8);
    assert_eq!(bytes[..4], [0, 0, 0, 1]);
    assert_eq!(bytes[20..24], [0, 0, 0, 2]);
    check(&bytes, &info);

    let node = remote_node_get_info_ret {
        model: [b'x' as i8; 32],
        ..Default::default()
    };
    assert_eq!(to_bytes(&node).unwrap().len(), 32 * 4 + 8 + 6 * 4);
}

#[test]
fn security_model_chars_include_the_nul() {
    let ret = remote_node_get_security_model_ret {
        model: c_chars("none"),
        doi: c_chars("0"),
    };
    let bytes = to_bytes(&ret).unwrap();
    #[rustfmt::skip]
    let want = [
        0, 0, 0, 5, 0, 0, 0, b'n', 0, 0, 0, b'o', 0, 0, 0, b'n', 0, 0, 0, b'e', 0, 0, 0, 0,
        0, 0, 0, 2, 0, 0, 0, b'0', 0, 0, 0, 0,
    ];
    assert_eq!(bytes, want);
    assert_eq!(
        c_chars_to_string(
            &from_bytes::<remote_node_get_security_model_ret>(&want)
                .unwrap()
                .model
        ),
        "none"
    );
    // 256 characters and the NUL fill VIR_SECURITY_MODEL_BUFLEN exactly.
    let full = remote_node_get_security_model_ret {
        model: c_chars(&"m".repeat(256)),
        doi: Vec::new(),
    };
    assert!(to_bytes(&full).is_ok());
    let too_long = remote_node_get_security_model_ret {
        model: c_chars(&"m".repeat(257)),
        doi: Vec::new(),
    };
    assert_eq!(
        to_bytes(&too_long),
        Err(XdrError::TooLong { max: 257, got: 258 })
    );
}

#[test]
fn uuid_is_sixteen_raw_bytes() {
    let args = remote_domain_lookup_by_uuid_args { uuid: vm1().uuid };
    assert_eq!(to_bytes(&args).unwrap(), vm1().uuid);
}

#[test]
fn unknown_typed_param_type_is_refused() {
    let bytes = [0, 0, 0, 1, b'x', 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0];
    assert_eq!(
        from_bytes::<remote_typed_param>(&bytes),
        Err(XdrError::BadDiscriminant {
            type_name: "remote_typed_param_value",
            value: 8
        })
    );
}

#[test]
fn oversized_outgoing_list_is_an_error() {
    let cp = remote_nonnull_domain_checkpoint {
        name: "c".into(),
        dom: vm1(),
    };
    let ret = remote_domain_list_all_checkpoints_ret {
        checkpoints: vec![cp; REMOTE_DOMAIN_CHECKPOINT_LIST_MAX as usize + 1],
        ret: 0,
    };
    assert_eq!(
        to_bytes(&ret),
        Err(XdrError::TooLong {
            max: 16384,
            got: 16385
        })
    );
}

#[test]
fn oversized_incoming_list_fails_before_allocating() {
    // need_results claims 2^31 checkpoints with nothing behind them.
    let bytes = [0x80, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        from_bytes::<remote_domain_list_all_checkpoints_ret>(&bytes),
        Err(XdrError::TooLong { max: 16384, .. })
    ));
    let bytes = [0, 0, 0x40, 0, 0, 0, 0, 0];
    assert!(matches!(
        from_bytes::<remote_domain_list_all_checkpoints_ret>(&bytes),
        Err(XdrError::Truncated { .. })
    ));
}

#[test]
fn event_messages_round_trip() {
    let msg = remote_domain_event_callback_lifecycle_msg {
        callbackID: 1,
        msg: remote_domain_event_lifecycle_msg {
            dom: vm1(),
            event: 5,
            detail: 1,
        },
    };
    let bytes = to_bytes(&msg).unwrap();
    check(&bytes, &msg);
    let qemu = qemu_domain_monitor_event_msg {
        callbackID: 2,
        dom: vm1(),
        event: "JOB_STATUS_CHANGE".into(),
        seconds: -1,
        micros: 5,
        details: None,
    };
    check(&to_bytes(&qemu).unwrap(), &qemu);
}

/// Frames of a `.frames` capture: (sent by the client, whole frame).
fn frames(text: &str) -> Vec<(bool, Vec<u8>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (dir, hex) = l.split_once(' ').unwrap();
            (dir == "C", fixture(hex))
        })
        .collect()
}

fn round_trip<T: Pack + Unpack + std::fmt::Debug>(body: &[u8]) -> T {
    let v = from_bytes::<T>(body).unwrap_or_else(|e| panic!("{e}: {}", std::any::type_name::<T>()));
    assert_eq!(to_bytes(&v).unwrap(), body, "re-encoding {v:?}");
    v
}

fn round_trip_body<P: Procedure>(h: &virNetMessageHeader, body: &[u8]) {
    match h.r#type {
        VIR_NET_CALL | VIR_NET_MESSAGE => drop(round_trip::<P::Args>(body)),
        VIR_NET_REPLY => drop(round_trip::<P::Ret>(body)),
        t => panic!("unexpected message type {t}"),
    }
}

macro_rules! by_proc {
    ($h:expr, $body:expr; $($m:ident),* $(,)?) => {
        match $h.proc {
            $(p if p == <remote_proc::$m as Procedure>::PROC => round_trip_body::<remote_proc::$m>($h, $body),)*
            p => panic!("no marker listed for remote procedure {p}"),
        }
    };
}

/// Decodes and re-encodes every frame of a capture; returns the headers
/// and bodies for further checks.
fn replay(text: &str) -> Vec<(virNetMessageHeader, Vec<u8>)> {
    let mut out = Vec::new();
    for (from_client, frame) in frames(text) {
        let (len, rest) = frame.split_at(4);
        assert_eq!(from_bytes::<u32>(len).unwrap() as usize, frame.len());
        let (header, body) = rest.split_at(VIR_NET_MESSAGE_HEADER_MAX as usize);
        let h: virNetMessageHeader = round_trip(header);
        assert_eq!(from_client, h.r#type == VIR_NET_CALL);
        assert_eq!(h.prog, REMOTE_PROGRAM);
        if h.status == VIR_NET_ERROR {
            round_trip::<remote_error>(body);
        } else {
            by_proc!(&h, body;
                AuthList, ConnectSupportsFeature, ConnectOpen, ConnectRegisterCloseCallback,
                ConnectUnregisterCloseCallback, ConnectClose, ConnectGetType, ConnectGetVersion,
                DomainLookupByName, DomainGetOsType, DomainGetInfo, DomainIsPersistent,
                DomainGetAutostart, DomainHasManagedSaveImage, NodeGetSecurityModel,
                DomainGetSecurityLabel, DomainGetMessages, ConnectListAllDomains, DomainGetState,
                DomainListAllCheckpoints, DomainListAllSnapshots, DomainGetJobStats,
                ConnectDomainEventCallbackRegisterAny, ConnectDomainEventCallbackDeregisterAny,
            );
        }
        out.push((h, body.to_vec()));
    }
    out
}

#[test]
fn libvirtd_captures_round_trip() {
    for text in [
        include_str!("../../fixtures/wire/libvirtd/version.frames"),
        include_str!("../../fixtures/wire/libvirtd/dominfo.frames"),
        include_str!("../../fixtures/wire/libvirtd/checkpoint_list.frames"),
        include_str!("../../fixtures/wire/libvirtd/snapshot_list.frames"),
        include_str!("../../fixtures/wire/libvirtd/domjobinfo_inactive.frames"),
        include_str!("../../fixtures/wire/libvirtd/domstate_reason.frames"),
        include_str!("../../fixtures/wire/libvirtd/event_all.frames"),
    ] {
        assert!(replay(text).len() > 10);
    }
}

#[test]
fn libvirtd_capture_contents() {
    let find = |msgs: &[(virNetMessageHeader, Vec<u8>)], proc, ty| {
        msgs.iter()
            .find(|(h, _)| h.proc == proc && h.r#type == ty)
            .map(|(_, b)| b.clone())
            .unwrap()
    };
    let list = replay(include_str!("../../fixtures/wire/libvirtd/list_all.frames"));
    let open: remote_connect_open_args =
        from_bytes(&find(&list, REMOTE_PROC_CONNECT_OPEN, VIR_NET_CALL)).unwrap();
    assert_eq!(
        open,
        remote_connect_open_args {
            name: Some("qemu:///system".into()),
            flags: 0
        }
    );
    let all: remote_connect_list_all_domains_ret = from_bytes(&find(
        &list,
        REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS,
        VIR_NET_REPLY,
    ))
    .unwrap();
    assert_eq!(
        (all.ret, all.domains[0].name.as_str(), all.domains[0].id),
        (1, "vm1", -1)
    );

    let missing = replay(include_str!(
        "../../fixtures/wire/libvirtd/dominfo_missing.frames"
    ));
    let (h, body) = missing
        .iter()
        .find(|(h, _)| h.status == VIR_NET_ERROR)
        .unwrap();
    assert_eq!(h.proc, REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME);
    let err: remote_error = from_bytes(body).unwrap();
    assert_eq!((err.code, err.domain, err.level), (42, 10, 2));
    assert_eq!(
        err.message.as_deref(),
        Some("Domain not found: no domain with matching name 'nosuchdom'")
    );

    let info = replay(include_str!("../../fixtures/wire/libvirtd/dominfo.frames"));
    let model: remote_node_get_security_model_ret = from_bytes(&find(
        &info,
        REMOTE_PROC_NODE_GET_SECURITY_MODEL,
        VIR_NET_REPLY,
    ))
    .unwrap();
    assert_eq!(
        model.model.last(),
        Some(&0),
        "C strings arrive with their NUL"
    );
}

/// The shape a dispatcher takes: decode `P::Args`, call, encode `P::Ret`.
fn serve<P: Procedure>(
    body: &[u8],
    handler: impl FnOnce(P::Args) -> P::Ret,
) -> Result<Vec<u8>, XdrError> {
    let args = from_bytes::<P::Args>(body)?;
    to_bytes(&handler(args))
}

#[test]
fn procedure_markers_drive_a_generic_dispatcher() {
    let body = to_bytes(&remote_domain_lookup_by_name_args { name: "vm1".into() }).unwrap();
    let reply = serve::<remote_proc::DomainLookupByName>(&body, |args| {
        assert_eq!(args.name, "vm1");
        remote_domain_lookup_by_name_ret { dom: vm1() }
    })
    .unwrap();
    assert_eq!(
        from_bytes::<remote_domain_lookup_by_name_ret>(&reply)
            .unwrap()
            .dom,
        vm1()
    );
    assert_eq!(
        serve::<remote_proc::ConnectClose>(&[], |()| ()).unwrap(),
        Vec::<u8>::new()
    );
    assert!(serve::<remote_proc::ConnectClose>(&[0; 4], |()| ()).is_err());
}

macro_rules! assert_markers {
    ($module:ident, $program:expr; $($marker:ident = $num:expr),* $(,)?) => {$(
        assert_eq!(<$module::$marker as Procedure>::PROC, $num, stringify!($marker));
        assert_eq!(<$module::$marker as Procedure>::PROGRAM, $program);
    )*};
}

#[test]
fn markers_carry_libvirt_numbers() {
    assert_markers!(remote_proc, 0x2000_8086;
        ConnectOpen = 1, ConnectClose = 2, ConnectGetType = 3, ConnectGetVersion = 4,
        ConnectGetMaxVcpus = 5, NodeGetInfo = 6, ConnectGetCapabilities = 7,
        DomainCreate = 9, DomainCreateXml = 10, DomainDefineXml = 11, DomainDestroy = 12,
        DomainGetXmlDesc = 14, DomainGetAutostart = 15, DomainGetInfo = 16,
        DomainGetMaxMemory = 17, DomainGetOsType = 19, ConnectListDefinedDomains = 21,
        DomainLookupById = 22, DomainLookupByName = 23, DomainLookupByUuid = 24,
        ConnectNumOfDefinedDomains = 25, DomainResume = 28, DomainSetAutostart = 29,
        DomainShutdown = 33, DomainSuspend = 34, DomainUndefine = 35, ConnectListDomains = 37,
        ConnectNumOfDomains = 51, ConnectGetHostname = 59, ConnectSupportsFeature = 60,
        AuthList = 66, DomainEventLifecycle = 107, ConnectGetUri = 110,
        DomainGetSecurityLabel = 121, NodeGetSecurityModel = 122, ConnectIsSecure = 149,
        DomainIsActive = 150, DomainIsPersistent = 151, ConnectGetLibVersion = 157,
        DomainGetJobInfo = 163, DomainAbortJob = 164, ConnectDomainEventRegisterAny = 167,
        ConnectDomainEventDeregisterAny = 168, DomainHasManagedSaveImage = 183,
        DomainSnapshotCreateXml = 185, DomainSnapshotGetXmlDesc = 186, DomainSnapshotNum = 187,
        DomainSnapshotListNames = 188, DomainSnapshotLookupByName = 189,
        DomainHasCurrentSnapshot = 190, DomainSnapshotCurrent = 191, DomainRevertToSnapshot = 192,
        DomainSnapshotDelete = 193, DomainGetBlockInfo = 194, DomainCreateWithFlags = 196,
        DomainGetVcpusFlags = 200, DomainIsUpdated = 202, DomainGetState = 212,
        DomainGetControlInfo = 229, DomainUndefineFlags = 231, DomainDestroyFlags = 234,
        DomainBlockJobAbort = 237, DomainGetBlockJobInfo = 238, DomainEventBlockJob = 241,
        DomainSnapshotGetParent = 244, DomainSnapshotNumChildren = 246,
        DomainSnapshotListChildrenNames = 247, DomainShutdownFlags = 258,
        DomainSnapshotIsCurrent = 271, DomainSnapshotHasMetadata = 272,
        ConnectListAllDomains = 273, DomainListAllSnapshots = 274,
        DomainSnapshotListAllChildren = 275, DomainGetHostname = 277, DomainGetJobStats = 298,
        ConnectDomainEventCallbackRegisterAny = 316, ConnectDomainEventCallbackDeregisterAny = 317,
        DomainEventCallbackLifecycle = 318, DomainEventCallbackBlockJob = 326,
        DomainFsfreeze = 335, DomainFsthaw = 336, DomainEventBlockJob2 = 339,
        ConnectGetDomainCapabilities = 342, DomainDefineXmlFlags = 350,
        ConnectRegisterCloseCallback = 360, ConnectUnregisterCloseCallback = 361,
        ConnectEventConnectionClosed = 362, DomainEventCallbackJobCompleted = 363,
        DomainCheckpointCreateXml = 411, DomainCheckpointGetXmlDesc = 412,
        DomainListAllCheckpoints = 413, DomainCheckpointListAllChildren = 414,
        DomainCheckpointLookupByName = 415, DomainCheckpointGetParent = 416,
        DomainCheckpointDelete = 417, DomainBackupBegin = 421, DomainBackupGetXmlDesc = 422,
        DomainGetMessages = 426, DomainAbortJobFlags = 442,
    );
    assert_markers!(qemu_proc, 0x2000_8087;
        DomainMonitorCommand = 1, DomainAttach = 2, DomainAgentCommand = 3,
        ConnectDomainMonitorEventRegister = 4, ConnectDomainMonitorEventDeregister = 5,
        DomainMonitorEvent = 6, DomainMonitorCommandWithFiles = 7,
    );
    assert_markers!(keepalive_proc, 0x6b65_6570; Ping = 1, Pong = 2);
}

#[test]
fn every_libvirt_procedure_has_an_entry() {
    let numbers: Vec<i32> = REMOTE_PROCS.iter().map(|p| p.number).collect();
    assert_eq!(numbers, (1..=443).collect::<Vec<_>>());
    assert_eq!(QEMU_PROCS.len(), 7);
    assert_eq!(KEEPALIVE_PROCS.len(), 2);
    for bad in [i32::MIN, -1, 0, 444] {
        assert_eq!(remote_proc_info(bad), None);
    }
    assert_eq!(qemu_proc_info(8), None);
}

#[test]
fn proc_info_names_the_public_api() {
    let info = |n| remote_proc_info(n).unwrap();
    let define = info(REMOTE_PROC_DOMAIN_DEFINE_XML);
    assert_eq!(
        (define.name, define.api, define.writes, define.event),
        ("DOMAIN_DEFINE_XML", Some("virDomainDefineXML"), true, false)
    );
    assert_eq!(
        (info(14).api, info(14).writes),
        (Some("virDomainGetXMLDesc"), false)
    );
    assert_eq!(
        (info(273).api, info(273).writes),
        (Some("virConnectListAllDomains"), false)
    );
    assert_eq!(
        (info(421).api, info(421).writes),
        (Some("virDomainBackupBegin"), true)
    );
    assert_eq!(
        (info(413).api, info(413).writes),
        (Some("virDomainListAllCheckpoints"), false)
    );
    assert_eq!(
        (info(443).name, info(443).api),
        ("DOMAIN_FD_ASSOCIATE", Some("virDomainFDAssociate"))
    );
    assert_eq!((info(66).api, info(66).event), (None, false));
    assert!(info(318).event && info(318).api.is_none());
    assert!(info(362).event);
    let qmc = qemu_proc_info(QEMU_PROC_DOMAIN_MONITOR_COMMAND).unwrap();
    assert_eq!(
        (qmc.api, qmc.writes),
        (Some("virDomainQemuMonitorCommand"), true)
    );
    assert!(keepalive_proc_info(KEEPALIVE_PROC_PONG).unwrap().event);
    // Events never claim an API; calls (but the auth steps) always do.
    for p in REMOTE_PROCS.iter().chain(QEMU_PROCS) {
        assert_eq!(
            p.api.is_none(),
            p.event || p.name.starts_with("AUTH_"),
            "{}",
            p.name
        );
    }
}
