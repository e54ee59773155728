//! CNI spec types and the skiff-bridge plugin.
