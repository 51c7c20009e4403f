//! Block node names as libvirt 9.0 gives them: an image is
//! `libvirt-N-storage` (its file or device) under `libvirt-N-format` (the
//! qcow2 or raw node that devices, jobs and bitmaps name), N counted per
//! domain. Tools and libvirtd's captures address nodes by these names, so
//! they are spelled in this one place.

/// Which of an image's two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// `libvirt-N-storage`.
    Storage,
    /// `libvirt-N-format`.
    Format,
}

/// The name of image `index`'s node of `layer`.
pub fn format(index: u32, layer: Layer) -> String {
    let suffix = match layer {
        Layer::Storage => "storage",
        Layer::Format => "format",
    };
    format!("libvirt-{index}-{suffix}")
}

/// The index and layer of a name [`format`] makes; `None` for any other.
pub fn parse(name: &str) -> Option<(u32, Layer)> {
    let (index, suffix) = name.strip_prefix("libvirt-")?.split_once('-')?;
    let layer = match suffix {
        "storage" => Layer::Storage,
        "format" => Layer::Format,
        _ => return None,
    };
    // u32's parser also takes a leading '+', which no name of ours has.
    if !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((index.parse().ok()?, layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_both_ways() {
        assert_eq!(format(2, Layer::Format), "libvirt-2-format");
        assert_eq!(format(13, Layer::Storage), "libvirt-13-storage");
        assert_eq!(parse("libvirt-13-storage"), Some((13, Layer::Storage)));
        assert_eq!(parse("libvirt-2-format"), Some((2, Layer::Format)));
        for other in [
            "libvirt-nbd-x",
            "libvirt-+2-format",
            "libvirt-2-fmt",
            "vda",
            "libvirt-",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
