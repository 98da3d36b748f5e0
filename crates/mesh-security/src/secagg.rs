//! SecAgg+.
