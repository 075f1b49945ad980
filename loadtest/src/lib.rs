//! A simulated Kubernetes cluster for demos, tests and load runs: a fleet of kubelets serving
//! `/metrics/resource` over TLS, and a kube-apiserver stand-in that serves the nodes and pods,
//! reviews tokens and access, and proxies `metrics.k8s.io` like kube-aggregator.

pub mod apiserver;
pub mod churn;
pub mod cluster;
pub mod demo;
pub mod fleet;
pub mod harness;
pub mod kubelet;
pub mod pki;
pub mod scrape_all;
