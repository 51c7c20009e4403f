//! Block copy (virDomainBlockCopy and the rebase-copy form).

use super::super::error::DriverError;
use super::super::{DomainRef, Driver};

impl Driver {
    /// virDomainBlockRebase with VIR_DOMAIN_BLOCK_REBASE_COPY.
    pub(super) async fn rebase_copy(
        &self,
        _dom: &DomainRef,
        _path: &str,
        _dest: Option<&str>,
        _bandwidth: u64,
        _flags: u32,
    ) -> Result<(), DriverError> {
        Err(DriverError::new(
            super::super::error::ErrorKind::NoSupport,
            "block copy",
        ))
    }
}

impl Driver {
    /// virDomainBlockCopy.
    pub async fn block_copy(
        &self,
        _dom: &DomainRef,
        _path: &str,
        _destxml: &str,
        _params: &[crate::driver::jobs::TypedParam],
        _flags: u32,
    ) -> Result<(), DriverError> {
        Err(DriverError::new(
            super::super::error::ErrorKind::NoSupport,
            "virDomainBlockCopy",
        ))
    }
}
