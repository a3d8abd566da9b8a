//! Core tests (being written).
