//! CRI runtime.v1 API (placeholder until the proto lands).
