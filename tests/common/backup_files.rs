//! The XML files `virsh backup-begin` takes, written in the test's
//! directory.

use std::path::Path;

use super::Daemon;

impl Daemon {
    /// `NAME.xml`: a push backup of vda into the qcow2 file `target`,
    /// incremental since `incremental` if given; returns its path.
    pub fn push_backup_xml(&self, name: &str, target: &Path, incremental: Option<&str>) -> String {
        let inc = incremental
            .map(|cp| format!("<incremental>{cp}</incremental>"))
            .unwrap_or_default();
        let xml = self.path(&format!("{name}.xml"));
        std::fs::write(
            &xml,
            format!(
                "<domainbackup>{inc}<disks><disk name='vda' type='file'><target file='{}'/>\
                 <driver type='qcow2'/></disk></disks></domainbackup>",
                target.display()
            ),
        )
        .unwrap();
        xml.to_str().unwrap().to_string()
    }

    /// `NAME-cp.xml`: a checkpoint named `name`; returns its path.
    pub fn checkpoint_xml(&self, name: &str) -> String {
        let xml = self.path(&format!("{name}-cp.xml"));
        std::fs::write(
            &xml,
            format!("<domaincheckpoint><name>{name}</name></domaincheckpoint>"),
        )
        .unwrap();
        xml.to_str().unwrap().to_string()
    }
}
