//! Generated wire types (placeholder until build/ generates them).
