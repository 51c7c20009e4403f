//! Moment metadata on its way to disk: the comment libvirt puts at the top
//! of each checkpoint and snapshot file (so that a file moved to
//! libvirtd's directory reads like its own), and the store's blocking,
//! fsyncing calls run off the async threads.

use super::error::DriverError;
use super::store::Store;
use super::Driver;

/// A metadata file: libvirt's header, naming the virsh command that edits
/// it (`checkpoint-edit`, `snapshot-edit`), then `body`.
pub(super) fn with_header(edit_command: &str, body: &str) -> String {
    format!(
        "<!--\n\
         WARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE\n\
         OVERWRITTEN AND LOST. Changes to this xml configuration should be made using:\n  \
         virsh {edit_command}\n\
         or other application using the libvirt API.\n\
         -->\n\n{body}"
    )
}

impl Driver {
    /// Changes the persistent definition, if the domain has one, and
    /// writes it: the next start runs on what a snapshot or a block job
    /// made of the disks.
    pub(super) async fn change_config(
        &self,
        obj: &super::registry::DomainObj,
        change: impl FnOnce(&mut crate::conf::DomainDef),
    ) -> Result<(), DriverError> {
        let xml: Option<String> = {
            let mut st = obj.lock();
            st.config.as_mut().map(|config| {
                change(config);
                config.format(
                    crate::conf::FormatMode::Inactive,
                    crate::conf::Secrets::Shown,
                )
            })
        };
        if let Some(xml) = xml {
            let uuid = obj.uuid;
            self.store_io(move |s| s.save_config(&uuid, &xml)).await?;
        }
        Ok(())
    }

    /// The one way the driver reaches its files: on the blocking pool
    /// (every write fsyncs), see [`super::store::Metadata`].
    pub(super) async fn store_io<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, DriverError> + Send + 'static,
    ) -> Result<T, DriverError> {
        self.shared.store.run(op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_libvirtds() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/reference/snapshot/libvirtd-files/s1.xml"
        );
        let theirs = std::fs::read_to_string(file).expect("libvirtd's file");
        let body = theirs.split_once("-->\n\n").expect("a header").1;
        assert_eq!(with_header("snapshot-edit", body), theirs);
    }
}
