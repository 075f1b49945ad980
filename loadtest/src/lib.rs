//! A simulated Kubernetes cluster: a kubelet fleet and a kube-apiserver stand-in.
