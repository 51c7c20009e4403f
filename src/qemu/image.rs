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

/// Whether a qcow2 image's header names a backing file (bytes 8..16: the
/// offset of its name, 0 for none). An unreadable image counts as having
/// none; QEMU then reports what is wrong with it.
pub async fn qcow2_has_backing(path: PathBuf) -> bool {
    let header = blocking(move || {
        let mut header = [0u8; 16];
        File::open(&path)
            .and_then(|mut f| f.read_exact(&mut header))
            .map_err(|e| QemuError::io(open_failed(&path), e))?;
        Ok(header)
    });
    match header.await {
        Ok(header) => header[..4] == QCOW2_MAGIC && header[8..16].iter().any(|&b| b != 0),
        Err(_) => false,
    }
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
