//! libvirt's block node names, which the daemon gives QEMU too: every
//! image is two nodes, `libvirt-N-storage` (the file or device) and
//! `libvirt-N-format` (qcow2 or raw on top, the one devices, jobs and
//! bitmaps refer to). Every layer of a disk's backing chain has its own
//! pair, as under libvirt. Tools that address nodes by these names work
//! against both daemons; only this module spells them.

const PREFIX: &str = "libvirt-";

/// The storage (protocol) node of image N.
pub fn storage(index: u32) -> String {
    format!("{PREFIX}{index}-storage")
}

/// The format node of image N.
pub fn format(index: u32) -> String {
    format!("{PREFIX}{index}-format")
}

/// The copy-before-write filter a push backup puts over a disk when the
/// guest must not wait long (`qemu::cbw`), named after its scratch image K.
pub fn cbw(index: u32) -> String {
    format!("{PREFIX}{index}-cbw")
}

/// The snapshot-access node over that filter.
pub fn snapshot_access(index: u32) -> String {
    format!("{PREFIX}{index}-access")
}

/// A test's slow stand-in for that scratch image (`crate::fault`).
pub fn slow(index: u32) -> String {
    format!("{PREFIX}{index}-slow")
}

/// N of either node name of image N.
pub fn index(node: &str) -> Option<u32> {
    let rest = node.strip_prefix(PREFIX)?;
    let (n, layer) = rest.split_once('-')?;
    matches!(layer, "storage" | "format")
        .then(|| n.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_both_ways() {
        assert_eq!(format(2), "libvirt-2-format");
        assert_eq!(storage(11), "libvirt-11-storage");
        assert_eq!(index(&format(7)), Some(7));
        assert_eq!(index(&storage(7)), Some(7));
        for other in [
            "libvirt-tmp-size-xml",
            "libvirt-nbd-x",
            "libvirt-3-cow",
            "vda",
        ] {
            assert_eq!(index(other), None, "{other}");
        }
    }
}
