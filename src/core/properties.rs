//! Core properties (being written).
