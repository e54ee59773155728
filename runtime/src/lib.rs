//! skiff runtime: images, bundles, containers.
