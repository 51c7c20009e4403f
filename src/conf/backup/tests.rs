//! Tests of the backup model.
