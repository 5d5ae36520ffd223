//! Kubernetes source (work in progress).
