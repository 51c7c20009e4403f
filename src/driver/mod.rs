//! The API: domains, checkpoints, snapshots, backups, jobs, rules, metadata.
