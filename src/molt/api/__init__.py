"""Molt's public API: the custom resources of group ``molt.dev``, version ``v1alpha1``.

The pydantic models here are the single source of truth; ``molt.api.crd`` renders them
into the CustomResourceDefinitions committed under ``molt/api/crds``.
"""

from molt.api.instancegroup import InstanceGroup, InstanceGroupSpec
from molt.api.reaper import Reaper, ReaperSpec
from molt.api.terminationpolicy import TerminationPolicy, TerminationPolicySpec
from molt.api.watchdog import Watchdog, WatchdogSpec

GROUP = "molt.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "InstanceGroup",
    "InstanceGroupSpec",
    "Reaper",
    "ReaperSpec",
    "TerminationPolicy",
    "TerminationPolicySpec",
    "Watchdog",
    "WatchdogSpec",
]
