//! The Agent Mesh node (being written).
