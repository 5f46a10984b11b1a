"""A real local control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, built from pinned Go modules, for development, demos and tests.
"""
