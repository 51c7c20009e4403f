//! One QEMU process per running domain: command line, QMP, block graph.
