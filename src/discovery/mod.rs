//! Nodes and pods from the kube-apiserver (list + watch), cached compactly.
//!
//! Knows nothing about metrics: it produces scrape targets and the label/phase caches the API joins with.
