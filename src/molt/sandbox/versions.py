"""Pinned versions of the control-plane components the sandbox builds, and of the Go
tools the tests use (helm, promtool).

Changing a pin changes the cache key, so a new build lands beside the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class GoTool:
    """A command built with ``go install PACKAGE@VERSION``."""

    package: str
    """Import path of the command's main package."""
    version: str
    """Version of the module that holds it, as the Go module proxy serves it."""
    ldflags: tuple[str, ...] = ()
    """``-X`` settings the project's own release build would stamp (e.g. its version)."""


HELM = "v3.19.5"
# Prometheus tags its Go module v0.<major><minor>.<patch>: v0.316.0 is Prometheus v3.16.0.
PROMETHEUS = "v0.316.0"

GO_TOOLS: dict[str, GoTool] = {
    "helm": GoTool(
        "helm.sh/helm/v3/cmd/helm",
        HELM,
        (f"-X helm.sh/helm/v3/internal/version.version={HELM}",),
    ),
    "promtool": GoTool("github.com/prometheus/prometheus/cmd/promtool", PROMETHEUS),
}
"""Every Go tool by binary name; adding one is one entry here."""
