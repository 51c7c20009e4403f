//! Scalar values of the domain XML, read the way libvirt 9.0 reads them:
//! numbers (strtoull rules), scaled memory sizes, UUIDs, disk target names,
//! architectures and machine types. Each function states whose behaviour it
//! reproduces, because the edge cases are what clients notice.

use uuid::Uuid;

use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};

/// An unsigned decimal number as `strtoull(s, &end, 10)` followed by
/// libvirt's "whole string, no minus sign" checks (`virStrToLong_ullp`):
/// leading whitespace and a `+` are accepted, trailing characters are not.
pub(crate) fn parse_u64_strict(s: &str) -> Option<u64> {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()
}

/// `virStrToLong_ui`: like [`parse_u64_strict`] but the value must fit an
/// unsigned int. (libvirt also lets "-1" through as UINT_MAX; that corner is
/// not reproduced: it is refused like any other negative number.)
pub(crate) fn parse_u32_strict(s: &str) -> Option<u32> {
    parse_u64_strict(s).and_then(|v| u32::try_from(v).ok())
}

/// The largest memory size libvirt accepts, in bytes (LLONG_MAX on 64-bit).
const MEMORY_MAX_BYTES: u64 = i64::MAX as u64;

/// Read a memory element's value and `unit` and return KiB, rounding up, as
/// `virDomainParseMemory` does (via `virParseScaledValue` and
/// `virScaleInteger`). `xpath` is what libvirt names in its message, e.g.
/// `./memory[1]`.
pub(crate) fn parse_memory_kib(
    text: &str,
    unit: Option<&str>,
    xpath: &str,
) -> Result<u64, ConfError> {
    let value = parse_u64_strict(text).ok_or_else(|| {
        ConfError::xml_helper(format!(
            "Invalid value '{text}' for element or attribute '{xpath}'"
        ))
    })?;
    let suffix = unit.unwrap_or("");
    let scale = unit_scale(suffix)?;
    if value != 0 && value > MEMORY_MAX_BYTES / scale {
        return Err(ConfError::new(
            ConfErrorKind::Overflow,
            ConfErrorDomain::None,
            format!("value too large: {value}{suffix}"),
        ));
    }
    let kib = (value * scale).div_ceil(1024);
    if kib >= MEMORY_MAX_BYTES.div_ceil(1024) {
        return Err(ConfError::new(
            ConfErrorKind::Overflow,
            ConfErrorDomain::Domain,
            "size value too large",
        ));
    }
    Ok(kib)
}

/// The byte multiplier of a unit suffix of a domain size: none means KiB.
fn unit_scale(suffix: &str) -> Result<u64, ConfError> {
    scale_integer(suffix, 1024)
}

/// The byte multiplier of a unit suffix (`virScaleInteger`): none means
/// `default`, `b`/`byte`/`bytes` are bytes, `k`/`KiB` are powers of 1024
/// and `KB` of 1000, up to exa; case-insensitive.
pub(crate) fn scale_integer(suffix: &str, default: u64) -> Result<u64, ConfError> {
    if suffix.is_empty() {
        return Ok(default);
    }
    let lower = suffix.to_ascii_lowercase();
    if matches!(lower.as_str(), "b" | "byte" | "bytes") {
        return Ok(1);
    }
    let unknown = || {
        ConfError::new(
            ConfErrorKind::InvalidArg,
            ConfErrorDomain::None,
            format!("unknown suffix '{suffix}'"),
        )
    };
    let mut chars = lower.chars();
    let first = chars.next().ok_or_else(unknown)?;
    let rest = chars.as_str();
    let base: u64 = match rest {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return Err(unknown()),
    };
    let power = match first {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return Err(unknown()),
    };
    Ok(base.pow(power))
}

/// A UUID as `virUUIDParse` reads it: surrounding whitespace, and `-` or
/// space between hex pairs anywhere, as long as there are exactly 32 hex
/// digits.
pub(crate) fn parse_uuid(s: &str) -> Option<Uuid> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let mut bytes = [0u8; 16];
    let mut chars = t.chars();
    let mut i = 0;
    while i < 16 {
        let c = chars.next()?;
        if c == '-' || c == ' ' {
            continue;
        }
        let hi = c.to_digit(16)?;
        let lo = chars.next()?.to_digit(16)?;
        bytes[i] = u8::try_from(hi * 16 + lo).ok()?;
        i += 1;
    }
    if chars.next().is_some() {
        return None;
    }
    Some(Uuid::from_bytes(bytes))
}

/// A disk target name `^(fd|hd|vd|sd|xvd|ubd)[a-z]+[0-9]*$` split into its
/// index (`vda` = 0, `vdz` = 25, `vdaa` = 26) and partition number, as
/// `virDiskNameParse`. The partition is `None` when the digits are not a
/// valid partition number (a leading zero), which only the QEMU driver's
/// check cares about.
pub(crate) fn parse_disk_name(name: &str) -> Option<(u32, Option<u32>)> {
    const PREFIXES: [&str; 6] = ["fd", "hd", "vd", "sd", "xvd", "ubd"];
    let rest = PREFIXES.iter().find_map(|p| name.strip_prefix(p))?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    if letters == 0 {
        return None;
    }
    let (alpha, digits) = rest.split_at(letters);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut idx: u32 = 0;
    for (i, b) in alpha.bytes().enumerate() {
        let carry = u32::from(i > 0);
        idx = idx
            .checked_add(carry)?
            .checked_mul(26)?
            .checked_add(u32::from(b - b'a'))?;
    }
    // libvirt keeps the index in an int.
    if i32::try_from(idx).is_err() {
        return None;
    }
    let partition = if digits.is_empty() {
        Some(0)
    } else if digits.len() > 1 && digits.starts_with('0') {
        None
    } else {
        digits.parse::<u32>().ok()
    };
    Some((idx, partition))
}

/// The index of a disk target name (`virDiskNameToIndex`).
pub(crate) fn disk_name_index(name: &str) -> Option<u32> {
    parse_disk_name(name).map(|(idx, _)| idx)
}

/// Architecture names libvirt 9.0 knows (util/virarch.c).
const KNOWN_ARCHES: &[&str] = &[
    "alpha",
    "armv6l",
    "armv7l",
    "armv7b",
    "aarch64",
    "cris",
    "i686",
    "ia64",
    "lm32",
    "m68k",
    "microblaze",
    "microblazeel",
    "mips",
    "mipsel",
    "mips64",
    "mips64el",
    "openrisc",
    "parisc",
    "parisc64",
    "ppc",
    "ppcle",
    "ppc64",
    "ppc64le",
    "ppcemb",
    "riscv32",
    "riscv64",
    "s390",
    "s390x",
    "sh4",
    "sh4eb",
    "sparc",
    "sparc64",
    "unicore32",
    "x86_64",
    "xtensa",
    "xtensaeb",
];

pub(crate) fn is_known_arch(arch: &str) -> bool {
    KNOWN_ARCHES.contains(&arch)
}

/// The emulator libvirt picks for an architecture this host can run
/// (Debian's qemu-system-x86 provides both).
pub(crate) fn default_emulator(arch: &str) -> Option<&'static str> {
    match arch {
        "x86_64" => Some("/usr/bin/qemu-system-x86_64"),
        "i686" => Some("/usr/bin/qemu-system-i386"),
        _ => None,
    }
}

/// The PC machine types QEMU 7.2's x86 emulators offer, as libvirt learns
/// them from `query-machines`; the aliases `pc` and `q35` are canonicalised
/// to the versioned name, as libvirt stores them.
pub(crate) fn canonical_machine(machine: Option<&str>) -> Option<String> {
    let m = machine.unwrap_or("pc");
    match m {
        "pc" => return Some("pc-i440fx-7.2".to_owned()),
        "q35" => return Some("pc-q35-7.2".to_owned()),
        // QEMU has microvm, isapc, none and x-remote too, but without a PCI
        // bus libvirt refuses them ("No PCI buses available").
        _ => {}
    }
    let known = versioned_machine(m, "pc-i440fx-", &I440FX_VERSIONS)
        || versioned_machine(m, "pc-q35-", &Q35_VERSIONS);
    known.then(|| m.to_owned())
}

/// From `qemu-system-x86_64 -machine help` (QEMU 7.2).
const I440FX_VERSIONS: [&str; 31] = [
    "7.2", "7.1", "7.0", "6.2", "6.1", "6.0", "5.2", "5.1", "5.0", "4.2", "4.1", "4.0", "3.1",
    "3.0", "2.9", "2.8", "2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.12", "2.11", "2.10", "2.1",
    "2.0", "1.7", "1.6", "1.5", "1.4",
];

const Q35_VERSIONS: [&str; 24] = [
    "7.2", "7.1", "7.0", "6.2", "6.1", "6.0", "5.2", "5.1", "5.0", "4.2", "4.1", "4.0.1", "4.0",
    "3.1", "3.0", "2.9", "2.8", "2.7", "2.6", "2.5", "2.4", "2.12", "2.11", "2.10",
];

fn versioned_machine(m: &str, prefix: &str, versions: &[&str]) -> bool {
    m.strip_prefix(prefix)
        .is_some_and(|v| versions.contains(&v))
}

/// Whether a canonical machine name is an i440FX or Q35 PC.
pub(crate) fn is_pc_machine(machine: &str) -> bool {
    machine.starts_with("pc-i440fx-") || machine.starts_with("pc-q35-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_strtoull() {
        assert_eq!(parse_u64_strict("42"), Some(42));
        assert_eq!(parse_u64_strict("  42"), Some(42));
        assert_eq!(parse_u64_strict("+5"), Some(5));
        assert_eq!(parse_u64_strict("42 "), None);
        assert_eq!(parse_u64_strict("-1"), None);
        assert_eq!(parse_u64_strict(""), None);
        assert_eq!(parse_u64_strict("99999999999999999999999"), None);
        assert_eq!(parse_u32_strict("4294967296"), None);
    }

    #[test]
    fn memory_units_scale_like_libvirt() {
        let kib = |v: &str, u: Option<&str>| parse_memory_kib(v, u, "./memory[1]");
        assert_eq!(kib("128", Some("MiB")), Ok(131072));
        assert_eq!(kib("131072", None), Ok(131072));
        assert_eq!(kib("1", Some("GB")), Ok(976563));
        assert_eq!(kib("1025", Some("b")), Ok(2));
        assert_eq!(kib("1025", Some("bytes")), Ok(2));
        assert_eq!(kib("2", Some("k")), Ok(2));
        assert_eq!(kib("1", Some("t")), Ok(1 << 30));

        let e = kib("1", Some("XB")).expect_err("bad unit");
        assert_eq!(e.kind(), ConfErrorKind::InvalidArg);
        assert_eq!(e.domain(), ConfErrorDomain::None);
        assert_eq!(e.detail(), Some("unknown suffix 'XB'"));

        let e = kib("100", Some("EiB")).expect_err("too large");
        assert_eq!(e.kind(), ConfErrorKind::Overflow);
        assert_eq!(e.detail(), Some("value too large: 100EiB"));
        let e = kib("18014398509481984", None).expect_err("too large");
        assert_eq!(e.detail(), Some("value too large: 18014398509481984"));

        let e = kib("lots", Some("MiB")).expect_err("nan");
        assert_eq!(e.domain(), ConfErrorDomain::Xml);
        assert_eq!(
            e.detail(),
            Some("Invalid value 'lots' for element or attribute './memory[1]'")
        );
    }

    #[test]
    fn uuids_parse_liberally() {
        let want = Uuid::parse_str("6b3c6a4e-1c4b-4a8e-9d7e-2f0a1b2c3dff").ok();
        assert_eq!(parse_uuid("6b3c6a4e1c4b4a8e9d7e2f0a1b2c3dff"), want);
        assert_eq!(parse_uuid(" 6B3C6A4E-1C4B-4A8E-9D7E-2F0A1B2C3DFF "), want);
        assert_eq!(parse_uuid("6b-3c 6a4e1c4b4a8e9d7e2f0a1b2c3dff"), want);
        assert_eq!(parse_uuid("not-a-uuid"), None);
        assert_eq!(parse_uuid("6b3c6a4e1c4b4a8e9d7e2f0a1b2c3dff00"), None);
        assert_eq!(parse_uuid("6b3c6a4e1c4b4a8e9d7e2f0a1b2c3df"), None);
        assert_eq!(parse_uuid("6-b3c6a4e1c4b4a8e9d7e2f0a1b2c3dff"), None);
    }

    #[test]
    fn disk_names_index_like_libvirt() {
        assert_eq!(disk_name_index("vda"), Some(0));
        assert_eq!(disk_name_index("sdb"), Some(1));
        assert_eq!(disk_name_index("vdz"), Some(25));
        assert_eq!(disk_name_index("vdaa"), Some(26));
        assert_eq!(disk_name_index("xvdc"), Some(2));
        assert_eq!(disk_name_index("hdc"), Some(2));
        assert_eq!(disk_name_index("zzz"), None);
        assert_eq!(disk_name_index("vd"), None);
        assert_eq!(disk_name_index("vdA"), None);
        assert_eq!(disk_name_index("vda1x"), None);
        assert_eq!(disk_name_index(&format!("vd{}", "z".repeat(40))), None);
        assert_eq!(parse_disk_name("vda1"), Some((0, Some(1))));
        assert_eq!(parse_disk_name("vda01"), Some((0, None)));
    }

    #[test]
    fn machines_canonicalise() {
        assert_eq!(canonical_machine(None).as_deref(), Some("pc-i440fx-7.2"));
        assert_eq!(
            canonical_machine(Some("q35")).as_deref(),
            Some("pc-q35-7.2")
        );
        assert_eq!(
            canonical_machine(Some("pc-i440fx-2.0")).as_deref(),
            Some("pc-i440fx-2.0")
        );
        assert_eq!(canonical_machine(Some("pc-q35-1.5")), None);
        assert_eq!(canonical_machine(Some("bogus")), None);
        assert!(is_pc_machine("pc-q35-7.2"));
        assert!(!is_pc_machine("microvm"));
    }
}
