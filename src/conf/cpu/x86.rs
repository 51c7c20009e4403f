//! What QEMU's x86 CPU runs, said the way libvirt 9.0 says it in a save
//! cookie: the default model (`qemu64`) plus the features QEMU turned on
//! beyond it, minus those it turned off (cpu_x86.c, virCPUx86UpdateLive,
//! as qemu_process.c applies it when a domain starts).
//!
//! libvirt learns the CPU from QEMU's QOM properties of the first vCPU
//! (every boolean property that is on, and the `unavailable-features`
//! list) and compares feature by feature, in the order of its x86 CPU map,
//! with the features its map gives the model. The tables here are those
//! facts of libvirt 9.0's map (`cpu_map/x86_features.xml`,
//! `x86_qemu64.xml`) and of its QEMU name translation.

use std::collections::BTreeSet;

use super::{CpuCheck, FeaturePolicy, GuestCpu};

/// libvirt's x86 features, in its map's order (the order features are
/// added to a CPU definition in).
const FEATURES: [&str; 212] = [
    "fpu",
    "vme",
    "de",
    "pse",
    "tsc",
    "msr",
    "pae",
    "mce",
    "cx8",
    "apic",
    "sep",
    "mtrr",
    "pge",
    "mca",
    "cmov",
    "pat",
    "pse36",
    "pn",
    "clflush",
    "ds",
    "acpi",
    "mmx",
    "fxsr",
    "sse",
    "sse2",
    "ss",
    "ht",
    "tm",
    "ia64",
    "pbe",
    "pni",
    "pclmuldq",
    "dtes64",
    "monitor",
    "ds_cpl",
    "vmx",
    "smx",
    "est",
    "tm2",
    "ssse3",
    "cid",
    "fma",
    "cx16",
    "xtpr",
    "pdcm",
    "pcid",
    "dca",
    "sse4.1",
    "sse4.2",
    "x2apic",
    "movbe",
    "popcnt",
    "tsc-deadline",
    "aes",
    "xsave",
    "osxsave",
    "avx",
    "f16c",
    "rdrand",
    "hypervisor",
    "arat",
    "fsgsbase",
    "tsc_adjust",
    "sgx",
    "bmi1",
    "hle",
    "avx2",
    "smep",
    "bmi2",
    "erms",
    "invpcid",
    "rtm",
    "cmt",
    "mpx",
    "avx512f",
    "avx512dq",
    "rdseed",
    "adx",
    "smap",
    "avx512ifma",
    "pcommit",
    "clflushopt",
    "clwb",
    "intel-pt",
    "avx512pf",
    "avx512er",
    "avx512cd",
    "sha-ni",
    "avx512bw",
    "avx512vl",
    "avx512vbmi",
    "umip",
    "pku",
    "ospke",
    "waitpkg",
    "avx512vbmi2",
    "gfni",
    "vaes",
    "vpclmulqdq",
    "avx512vnni",
    "avx512bitalg",
    "avx512-vpopcntdq",
    "la57",
    "rdpid",
    "bus-lock-detect",
    "cldemote",
    "movdiri",
    "movdir64b",
    "sgxlc",
    "pks",
    "avx512-4vnniw",
    "avx512-4fmaps",
    "fsrm",
    "avx512-vp2intersect",
    "md-clear",
    "serialize",
    "tsx-ldtrk",
    "pconfig",
    "arch-lbr",
    "amx-bf16",
    "avx512-fp16",
    "amx-tile",
    "amx-int8",
    "spec-ctrl",
    "stibp",
    "arch-capabilities",
    "core-capability",
    "ssbd",
    "avx-vnni",
    "avx512-bf16",
    "xsaveopt",
    "xsavec",
    "xgetbv1",
    "xsaves",
    "xfd",
    "mbm_total",
    "mbm_local",
    "sgx1",
    "sgx2",
    "sgx-exinfo",
    "sgx-debug",
    "sgx-mode64",
    "sgx-provisionkey",
    "sgx-tokenkey",
    "sgx-kss",
    "intel-pt-lip",
    "syscall",
    "nx",
    "mmxext",
    "fxsr_opt",
    "pdpe1gb",
    "rdtscp",
    "lm",
    "3dnowext",
    "3dnow",
    "lahf_lm",
    "cmp_legacy",
    "svm",
    "extapic",
    "cr8legacy",
    "abm",
    "sse4a",
    "misalignsse",
    "3dnowprefetch",
    "osvw",
    "ibs",
    "xop",
    "skinit",
    "wdt",
    "lwp",
    "fma4",
    "tce",
    "cvt16",
    "nodeid_msr",
    "tbm",
    "topoext",
    "perfctr_core",
    "perfctr_nb",
    "invtsc",
    "clzero",
    "xsaveerptr",
    "wbnoinvd",
    "ibpb",
    "ibrs",
    "amd-stibp",
    "amd-ssbd",
    "virt-ssbd",
    "amd-no-ssb",
    "npt",
    "lbrv",
    "svm-lock",
    "nrip-save",
    "tsc-scale",
    "vmcb-clean",
    "flushbyasid",
    "decodeassists",
    "pause-filter",
    "pfthreshold",
    "avic",
    "v-vmsave-vmload",
    "vgif",
    "svme-addr-chk",
    "rdctl-no",
    "ibrs-all",
    "rsba",
    "skip-l1dfl-vmentry",
    "ssb-no",
    "mds-no",
    "pschange-mc-no",
    "tsx-ctrl",
    "taa-no",
    "split-lock-detect",
];

/// The features libvirt's map gives `qemu64` (TCG-only ones such as
/// `lahf_lm` are left out of it, so QEMU's TCG CPU shows them as extra).
const QEMU64: [&str; 27] = [
    "apic", "clflush", "cmov", "cx16", "cx8", "de", "fpu", "fxsr", "lm", "mca", "mce", "mmx",
    "msr", "mtrr", "nx", "pae", "pat", "pge", "pni", "pse", "pse36", "sep", "sse", "sse2", "svm",
    "syscall", "tsc",
];

/// Where QEMU's property name differs from libvirt's feature name
/// (libvirt, QEMU).
const QEMU_NAMES: [(&str, &str); 11] = [
    ("cmp_legacy", "cmp-legacy"),
    ("ds_cpl", "ds-cpl"),
    ("fxsr_opt", "fxsr-opt"),
    ("kvm_pv_eoi", "kvm-pv-eoi"),
    ("kvm_pv_unhalt", "kvm-pv-unhalt"),
    ("lahf_lm", "lahf-lm"),
    ("nodeid_msr", "nodeid-msr"),
    ("pclmuldq", "pclmulqdq"),
    ("perfctr_core", "perfctr-core"),
    ("perfctr_nb", "perfctr-nb"),
    ("tsc_adjust", "tsc-adjust"),
];

/// libvirt's name for a QEMU CPU property.
pub fn from_qemu(prop: &str) -> &str {
    QEMU_NAMES
        .iter()
        .find(|(_, q)| *q == prop)
        .map_or(prop, |(l, _)| l)
}

/// Whether a QEMU CPU property names a feature libvirt's map knows: the
/// only ones worth asking QEMU for.
pub fn is_mapped(prop: &str) -> bool {
    FEATURES.contains(&from_qemu(prop))
}

/// The CPU libvirt records for a domain started with its default CPU
/// (`qemu64`) when QEMU reports the properties `enabled` (those that are
/// on) and `unavailable` (QEMU's `unavailable-features`), by QEMU's names.
/// `None` when QEMU runs exactly the model: libvirt then records no CPU.
pub fn live_default(
    enabled: &BTreeSet<String>,
    unavailable: &BTreeSet<String>,
) -> Option<GuestCpu> {
    let on: BTreeSet<&str> = enabled.iter().map(|p| from_qemu(p)).collect();
    let off: BTreeSet<&str> = unavailable.iter().map(|p| from_qemu(p)).collect();
    let mut cpu = GuestCpu::qemu64();
    for feature in FEATURES {
        let in_model = QEMU64.contains(&feature);
        let is_on = on.contains(feature);
        if !in_model && is_on {
            cpu.update_feature(feature, FeaturePolicy::Require);
        }
        if off.contains(feature) || (in_model && !is_on) {
            cpu.update_feature(feature, FeaturePolicy::Disable);
        }
    }
    if cpu.features.is_empty() {
        return None;
    }
    cpu.check = CpuCheck::Full;
    Some(cpu)
}
