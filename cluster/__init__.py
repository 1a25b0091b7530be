"""A real Kubernetes control plane on one machine, without Docker: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler built from pinned sources, kwok as the kubelets,
and Prometheus — for trying edgeaigc locally and for its end-to-end tests."""
