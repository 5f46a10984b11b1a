"""Pinned versions of the control-plane components the sandbox builds.

Changing a pin changes the cache key, so a new build lands beside the old one.
"""

KUBERNETES = "v1.34.4"
# Kubernetes' staging modules (k8s.io/api, k8s.io/client-go, ...) publish as v0.<minor>.<patch>.
KUBERNETES_STAGING = "v0.34.4"
ETCD = "v3.6.16"
KWOK = "v0.8.0"

# Every staging module of k8s.io/kubernetes: its go.mod requires them at v0.0.0 and
# replaces them with ./staging/src/..., which only works inside its own repository.
STAGING_MODULES = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
)

ETCD_MODULES = ("api/v3", "client/pkg/v3", "client/v3", "pkg/v3", "server/v3")
