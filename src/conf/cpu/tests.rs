//! The CPU model against libvirtd 9.0: its QMP traffic at a domain's start
//! (`fixtures/reference/snapshot/start.qmp`: every boolean QOM property of
//! the vCPU) must give the CPU libvirtd then recorded in its snapshots'
//! cookies (`libvirtd-files/s1.xml`); cookies libvirtd re-read on redefine
//! come back in its shape.

use std::collections::BTreeSet;

use super::*;
use crate::conf::test_support::{fixtures, read};
use crate::conf::xml::{parse, Limits};

fn element(xml: &str) -> Element {
    parse(xml, "(t)", &Limits::default()).expect("well-formed")
}

fn written(cpu: &GuestCpu) -> String {
    let mut out = String::new();
    cpu.to_element().expect("an element").write(&mut out, 0);
    out
}

/// (enabled, unavailable) from the `qom-get` replies of a `.qmp` capture.
fn qom_answers(qmp: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut on, mut unavailable) = (BTreeSet::new(), BTreeSet::new());
    let mut asked: Option<(String, String)> = None;
    for line in qmp.lines() {
        if let Some(cmd) = line.strip_prefix("-> ") {
            let v: serde_json::Value = serde_json::from_str(cmd).expect("json");
            asked = (v["execute"] == "qom-get").then(|| {
                (
                    v["arguments"]["property"].as_str().unwrap().to_owned(),
                    v["id"].as_str().unwrap().to_owned(),
                )
            });
        } else if let (Some(reply), Some((prop, id))) = (line.strip_prefix("<- "), &asked) {
            let v: serde_json::Value = serde_json::from_str(reply).expect("json");
            if v["id"] != id.as_str() {
                continue;
            }
            match &v["return"] {
                serde_json::Value::Bool(true) => {
                    on.insert(prop.clone());
                }
                serde_json::Value::Array(list) if prop == "unavailable-features" => {
                    unavailable.extend(list.iter().filter_map(|s| s.as_str().map(str::to_owned)));
                }
                _ => {}
            }
        }
    }
    (on, unavailable)
}

#[test]
fn qemu64_under_tcg_is_what_libvirtd_recorded() {
    let qmp = read(&fixtures().join("reference/snapshot/start.qmp"));
    let (on, unavailable) = qom_answers(&qmp);
    assert!(on.len() > 30, "the capture has the vCPU's properties");
    let cpu = x86::live_default(&on, &unavailable).expect("QEMU adds features");
    let file = read(&fixtures().join("reference/snapshot/libvirtd-files/s1.xml"));
    let theirs = &file[file.find("<cookie>").unwrap()..file.find("</cookie>").unwrap()];
    let theirs: String = theirs
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .filter(|l| !l.contains("slirpHelper") && !l.trim().is_empty())
        .collect();
    assert_eq!(written(&cpu), theirs);
}

#[test]
fn live_features_follow_the_map() {
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    let model = [
        "apic", "clflush", "cmov", "cx16", "cx8", "de", "fpu", "fxsr", "lm", "mca", "mce", "mmx",
        "msr", "mtrr", "nx", "pae", "pat", "pge", "pni", "pse", "pse36", "sep", "sse", "sse2",
        "svm", "syscall", "tsc",
    ];
    // Exactly the model: nothing to record.
    assert_eq!(x86::live_default(&set(&model), &set(&[])), None);
    // QEMU's names are translated; an unknown property counts for nothing;
    // a model feature that is off or unavailable is disabled; features
    // come in the map's order, not the properties'.
    let mut on: Vec<&str> = model.iter().copied().filter(|f| *f != "svm").collect();
    on.extend(["pclmulqdq", "x-made-up"]);
    let cpu = x86::live_default(&set(&on), &set(&["sse2"])).expect("changed");
    assert_eq!(
        written(&cpu),
        "<cpu mode='custom' match='exact' check='full'>\n  \
         <model fallback='forbid'>qemu64</model>\n  \
         <feature policy='disable' name='sse2'/>\n  \
         <feature policy='require' name='pclmuldq'/>\n  \
         <feature policy='disable' name='svm'/>\n\
         </cpu>\n"
    );
    assert!(x86::is_mapped("lahf-lm") && x86::is_mapped("sse4.1"));
    assert!(!x86::is_mapped("realized") && !x86::is_mapped("vmx-vmfunc"));
}

#[test]
fn parsed_cpus_are_written_in_libvirts_shape() {
    // From libvirtd: a redefined cookie's CPU comes back normalized.
    let cpu = GuestCpu::parse(&element(
        "<cpu check='full' match='exact'   mode='custom'><feature name='lahf_lm' policy='require'/>\
         <model fallback='forbid'>qemu64</model></cpu>",
    ))
    .expect("valid");
    assert_eq!(
        written(&cpu),
        "<cpu mode='custom' match='exact' check='full'>\n  \
         <model fallback='forbid'>qemu64</model>\n  \
         <feature policy='require' name='lahf_lm'/>\n</cpu>\n"
    );
    let cases = [
        (
            "<cpu><model>Nehalem</model><vendor>Intel</vendor><topology sockets='1' cores='2' threads='1'/>\
             <feature name='x'/></cpu>",
            "<cpu mode='custom' match='exact'>\n  <model fallback='allow'>Nehalem</model>\n  \
             <vendor>Intel</vendor>\n  <topology sockets='1' dies='1' cores='2' threads='1'/>\n  \
             <feature policy='require' name='x'/>\n</cpu>\n",
        ),
        (
            "<cpu mode='host-passthrough' migratable='on' check='default'><model>x</model></cpu>",
            "<cpu mode='host-passthrough' migratable='on'/>\n",
        ),
        (
            "<cpu><topology sockets='2' dies='1' cores='1' threads='1'/></cpu>",
            "<cpu>\n  <topology sockets='2' dies='1' cores='1' threads='1'/>\n</cpu>\n",
        ),
    ];
    for (xml, want) in cases {
        let cpu = GuestCpu::parse(&element(xml)).expect(xml);
        assert_eq!(written(&cpu), want, "{xml}");
    }
    assert_eq!(
        GuestCpu::parse(&element("<cpu/>"))
            .expect("empty")
            .to_element(),
        None
    );
}

#[test]
fn bad_cpus_get_libvirts_errors() {
    let cases = [
        (
            "<cpu mode='bogus'/>",
            67,
            31,
            "Invalid mode attribute 'bogus'",
        ),
        (
            "<cpu migratable='on'/>",
            67,
            31,
            "Attribute migratable is only allowed for 'host-passthrough' / 'maximum' CPU mode",
        ),
        (
            "<cpu match='x'/>",
            27,
            5,
            "Invalid value for attribute 'match' in element 'cpu': 'x'.",
        ),
        (
            "<cpu><model fallback='x'>a</model></cpu>",
            67,
            31,
            "Invalid fallback attribute",
        ),
        (
            "<cpu><model vendor_id='short'>a</model></cpu>",
            27,
            31,
            "vendor_id must be exactly 12 characters long",
        ),
        (
            "<cpu><vendor>Intel</vendor></cpu>",
            27,
            31,
            "CPU vendor specified without CPU model",
        ),
        (
            "<cpu><topology sockets='0' cores='1' threads='1'/></cpu>",
            27,
            5,
            "Invalid value for attribute 'sockets' in element 'topology': Zero is not permitted",
        ),
        (
            "<cpu><topology sockets='1' threads='1'/></cpu>",
            27,
            5,
            "Missing required attribute 'cores' in element 'topology'",
        ),
        (
            "<cpu><feature name='a'/></cpu>",
            27,
            31,
            "Non-empty feature list specified without CPU model",
        ),
        (
            "<cpu><model>m</model><feature name='a' policy='x'/></cpu>",
            67,
            31,
            "Invalid CPU feature policy",
        ),
        (
            "<cpu><model>m</model><feature name=''/></cpu>",
            27,
            31,
            "Invalid CPU feature name",
        ),
        (
            "<cpu><model>m</model><feature name='a'/><feature name='a' policy='disable'/></cpu>",
            27,
            31,
            "CPU feature 'a' specified more than once",
        ),
    ];
    for (xml, code, domain, detail) in cases {
        let err = GuestCpu::parse(&element(xml)).expect_err(xml);
        assert_eq!(
            (err.kind().code(), err.domain().code(), err.detail()),
            (code, domain, Some(detail)),
            "{xml}"
        );
    }
}
