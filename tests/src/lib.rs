//! Test support for skiff end-to-end tests.
