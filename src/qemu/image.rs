//! A disk image's sizes read from the host, as libvirt reads them where
//! QEMU cannot be asked (qemuStorageLimitsRefresh,
//! virStorageSourceUpdatePhysicalSize): the file's length and blocks, a
//! device's end, a qcow2 header's virtual size (what `qemu-img info` calls
//! the virtual size). The reads run on the blocking pool.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::QemuError;

/// (capacity, allocation, physical) in bytes, virDomainBlockInfo's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImageSizes {
    pub capacity: u64,
    pub allocation: u64,
    pub physical: u64,
}

/// What libvirt reports for a shut-off domain's disk: a regular file's
/// length and allocated blocks, a block device's size for all three, and
/// for qcow2 the capacity its header gives. A qcow2 image on a block
/// device gets allocation 0, which libvirt leaves for QEMU to tell.
pub async fn offline_sizes(path: PathBuf, qcow2: bool) -> Result<ImageSizes, QemuError> {
    blocking(move || {
        let (mut file, meta) = open(&path)?;
        let mut sizes = if meta.file_type().is_file() {
            ImageSizes {
                capacity: meta.len(),
                allocation: meta.blocks().saturating_mul(512),
                physical: meta.len(),
            }
        } else {
            let end = device_end(&mut file, &path)?;
            ImageSizes {
                capacity: end,
                allocation: end,
                physical: end,
            }
        };
        if qcow2 {
            sizes.capacity = qcow2_virtual_size(&mut file, &path)?;
            if meta.file_type().is_block_device() {
                sizes.allocation = 0;
            }
        }
        Ok(sizes)
    })
    .await
}

/// The physical size libvirt reads beside QEMU's figures: a file's length,
/// a device's end.
pub async fn physical_size(path: PathBuf) -> Result<u64, QemuError> {
    blocking(move || {
        let (mut file, meta) = open(&path)?;
        if meta.file_type().is_file() {
            Ok(meta.len())
        } else {
            device_end(&mut file, &path)
        }
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QemuError> + Send + 'static,
) -> Result<T, QemuError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QemuError::Internal(format!("image read failed: {e}")))?
}

fn open(path: &Path) -> Result<(File, std::fs::Metadata), QemuError> {
    let file = File::open(path).map_err(|e| QemuError::io(open_failed(path), e))?;
    let meta = file
        .metadata()
        .map_err(|e| QemuError::io(format!("cannot stat file '{}'", path.display()), e))?;
    Ok((file, meta))
}

fn open_failed(path: &Path) -> String {
    format!("Failed to open file '{}'", path.display())
}

fn device_end(file: &mut File, path: &Path) -> Result<u64, QemuError> {
    file.seek(SeekFrom::End(0))
        .map_err(|e| QemuError::io(format!("failed to seek to end of '{}'", path.display()), e))
}

/// One image below a disk's top, as the layer above names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingImage {
    /// The path QEMU opens: the name in the header, relative names taken
    /// from the directory of the image that names them (as QEMU does).
    pub path: PathBuf,
    /// A host block device rather than a file.
    pub block: bool,
    /// qcow2 (else raw).
    pub qcow2: bool,
}

/// libvirt's QEMU_DOMAIN_STORAGE_SOURCE_CHAIN_MAX_DEPTH.
const MAX_CHAIN_DEPTH: usize = 200;

/// The images below the qcow2 image `top`, top-down, read from the
/// headers as libvirt reads them at start (virStorageSourceGetMetadata).
/// An unreadable top gives an empty chain (QEMU then says what is wrong
/// with it). `None` when the chain cannot be written out node by node (a
/// backing name that is not a local path, a missing or unknown backing
/// format, a loop, an unreadable layer, or deeper than libvirt goes):
/// QEMU then opens it from the header itself.
pub async fn backing_chain(top: PathBuf) -> Option<Vec<BackingImage>> {
    blocking(move || Ok(read_chain(&top))).await.unwrap_or(None)
}

fn read_chain(top: &Path) -> Option<Vec<BackingImage>> {
    let Ok(mut file) = File::open(top) else {
        return Some(Vec::new());
    };
    let mut seen = std::collections::HashSet::new();
    seen.insert(std::fs::canonicalize(top).ok()?);
    let mut chain = Vec::new();
    let mut current = top.to_path_buf();
    loop {
        let Some((name, format)) = qcow2_backing(&mut file)? else {
            return Some(chain);
        };
        if chain.len() >= MAX_CHAIN_DEPTH || name.starts_with("json:") || name.contains("://") {
            return None;
        }
        let path = match Path::new(&name) {
            p if p.is_absolute() => p.to_path_buf(),
            p => current.parent().unwrap_or(Path::new("/")).join(p),
        };
        let qcow2 = match format.as_deref() {
            Some("qcow2") => true,
            Some("raw") => false,
            _ => return None,
        };
        file = File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        if !seen.insert(std::fs::canonicalize(&path).ok()?) {
            return None;
        }
        chain.push(BackingImage {
            path: path.clone(),
            block: meta.file_type().is_block_device(),
            qcow2,
        });
        if !qcow2 {
            return Some(chain);
        }
        current = path;
    }
}

/// The backing file name and format a qcow2 header gives: `Some(None)`
/// for an image without one (or not qcow2), `None` when the header
/// cannot be read.
fn qcow2_backing(file: &mut File) -> Option<Option<(String, Option<String>)>> {
    // The header and its extensions sit in the first cluster; 64 KiB
    // covers every cluster size an extension area can need in practice.
    let mut head = Vec::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.by_ref().take(1 << 16).read_to_end(&mut head).ok()?;
    parse_qcow2_backing(&head, |offset, len| {
        let mut name = vec![0u8; len];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut name).ok()?;
        Some(name)
    })
}

/// Backing format extension (QCOW2_EXT_MAGIC_BACKING_FORMAT).
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

fn parse_qcow2_backing(
    head: &[u8],
    read_at: impl FnOnce(u64, usize) -> Option<Vec<u8>>,
) -> Option<Option<(String, Option<String>)>> {
    let be32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?))
    };
    let be64 = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(head.get(at..at + 8)?.try_into().ok()?))
    };
    if head.get(..4)? != QCOW2_MAGIC {
        return Some(None);
    }
    let offset = be64(8)?;
    if offset == 0 {
        return Some(None);
    }
    // QEMU refuses names longer than 1023 bytes.
    let len = usize::try_from(be32(16)?)
        .ok()
        .filter(|&l| l > 0 && l < 1024)?;
    let name = match usize::try_from(offset) {
        Ok(at) if at.checked_add(len).is_some_and(|end| end <= head.len()) => {
            head[at..at + len].to_vec()
        }
        _ => read_at(offset, len)?,
    };
    let name = String::from_utf8(name).ok()?;
    let mut at = match be32(4)? {
        2 => 72,
        _ => usize::try_from(be32(100)?).ok()?,
    };
    let mut format = None;
    while let (Some(kind), Some(size)) = (be32(at), be32(at + 4)) {
        let size = usize::try_from(size).ok()?;
        let data = head.get(at + 8..at + 8 + size)?;
        match kind {
            0 => break,
            EXT_BACKING_FORMAT => format = Some(String::from_utf8(data.to_vec()).ok()?),
            _ => {}
        }
        at += 8 + size.div_ceil(8) * 8;
    }
    Some(Some((name, format)))
}

const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Bytes 24..32 of a qcow2 header, big-endian, after its magic.
fn qcow2_virtual_size(file: &mut File, path: &Path) -> Result<u64, QemuError> {
    let mut header = [0u8; 32];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| QemuError::io(format!("cannot read header '{}'", path.display()), e))?;
    parse_qcow2_size(&header).ok_or_else(|| {
        QemuError::io(
            format!("cannot read header '{}'", path.display()),
            io::Error::from(io::ErrorKind::InvalidData),
        )
    })
}

/// The virtual size a qcow2 header gives, if it is one.
fn parse_qcow2_size(header: &[u8; 32]) -> Option<u64> {
    if header[..4] != QCOW2_MAGIC {
        return None;
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&header[24..32]);
    Some(u64::from_be_bytes(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 3 header with a backing name and its format extension.
    fn header(name: &[u8], format: Option<&[u8]>) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        if let Some(format) = format {
            h.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            h.extend_from_slice(&u32::try_from(format.len()).unwrap().to_be_bytes());
            h.extend_from_slice(format);
            h.resize(h.len().div_ceil(8) * 8, 0);
        }
        h.extend_from_slice(&[0u8; 8]);
        let at = h.len();
        h[8..16].copy_from_slice(&u64::try_from(at).unwrap().to_be_bytes());
        h[16..20].copy_from_slice(&u32::try_from(name.len()).unwrap().to_be_bytes());
        h.extend_from_slice(name);
        h
    }

    #[test]
    fn a_qcow2_header_gives_its_backing_file_and_format() {
        let none = |_, _| None;
        assert_eq!(
            parse_qcow2_backing(&header(b"base.qcow2", Some(b"qcow2")), none),
            Some(Some(("base.qcow2".into(), Some("qcow2".into()))))
        );
        assert_eq!(
            parse_qcow2_backing(&header(b"/b.raw", None), none),
            Some(Some(("/b.raw".into(), None)))
        );
        let mut plain = header(b"x", None);
        plain[8..16].fill(0);
        assert_eq!(parse_qcow2_backing(&plain, none), Some(None));
        assert_eq!(parse_qcow2_backing(b"not an image", none), Some(None));
    }

    /// Relative names from the image's directory, and a loop refused.
    #[test]
    fn a_chain_is_read_from_the_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        std::fs::write(path("base.raw"), [0u8; 512]).unwrap();
        std::fs::create_dir(path("sub")).unwrap();
        std::fs::write(path("sub/mid.qcow2"), header(b"../base.raw", Some(b"raw"))).unwrap();
        std::fs::write(path("top.qcow2"), header(b"sub/mid.qcow2", Some(b"qcow2"))).unwrap();
        let chain = read_chain(&path("top.qcow2")).unwrap();
        assert_eq!(
            chain,
            [
                BackingImage {
                    path: path("sub/mid.qcow2"),
                    block: false,
                    qcow2: true,
                },
                BackingImage {
                    path: path("sub/../base.raw"),
                    block: false,
                    qcow2: false,
                },
            ]
        );
        std::fs::write(path("a.qcow2"), header(b"b.qcow2", Some(b"qcow2"))).unwrap();
        std::fs::write(path("b.qcow2"), header(b"a.qcow2", Some(b"qcow2"))).unwrap();
        assert_eq!(read_chain(&path("a.qcow2")), None);
        std::fs::write(path("c.qcow2"), header(b"base.raw", None)).unwrap();
        assert_eq!(read_chain(&path("c.qcow2")), None);
        assert_eq!(read_chain(&path("missing.qcow2")), Some(Vec::new()));
    }

    #[test]
    fn a_qcow2_header_gives_its_virtual_size() {
        let mut header = [0u8; 32];
        header[..4].copy_from_slice(b"QFI\xfb");
        header[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
        assert_eq!(parse_qcow2_size(&header), Some(64 << 20));
        header[0] = 0;
        assert_eq!(parse_qcow2_size(&header), None);
    }
}
