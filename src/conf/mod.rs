//! XML models: parse, validate, format. Pure: no I/O.
