"""Every name Molt writes onto or reads from other objects, in one place.

The labels and annotations marked *contract* are the public API (DESIGN.md: tests and
tools outside this repository rely on them); the rest are Molt's own step bookkeeping,
read back after a restart. Kubernetes' own names Molt acts on are listed last.
"""

from __future__ import annotations

# Contract: a node's place in the pipeline and why it is there.
STATE_LABEL = "molt.dev/state"
SELECTED = "selected"
DRAINING = "draining"
TERMINATING = "terminating"
POLICY_ANNOTATION = "molt.dev/policy"
REASON_ANNOTATION = "molt.dev/reason"
SELECTED_AT_ANNOTATION = "molt.dev/selected-at"
BLOCKED_ANNOTATION = "molt.dev/blocked"

# Contract: nodes Molt launches (or registers).
GROUP_LABEL = "molt.dev/instance-group"
REVISION_LABEL = "molt.dev/revision"
CAPACITY_TYPE_LABEL = "molt.dev/capacity-type"
ZONE_LABEL = "topology.kubernetes.io/zone"

# Contract: annotations Molt reads (malformed values are reported once and skipped).
LAUNCHED_AT_ANNOTATION = "molt.dev/launched-at"
DO_NOT_DISRUPT = "molt.dev/do-not-disrupt"

# Molt's bookkeeping on a node in the pipeline.
DEADLINE_ANNOTATION = "molt.dev/deadline"
REPLACEMENT_ANNOTATION = "molt.dev/replacement"
"""Written when a node passes its group's drain gate (or goes without a replacement)."""
DRAIN_STARTED_ANNOTATION = "molt.dev/drain-started-at"
DRAINED_AT_ANNOTATION = "molt.dev/drained-at"
"""When the drain finished (RFC 3339). The node stays ``draining`` while its preTerminate
actions run and turns ``terminating`` only after them, so a node labelled terminating has
already handed off what those actions move (etcd leadership, an active Vault)."""
ACTIONS_ANNOTATION = "molt.dev/actions"
"""Lifecycle action progress, as JSON keyed ``<hook>/<source>/<name>``."""
UNREACHABLE_ANNOTATION = "molt.dev/unreachable"
"""What the drain did about an unreachable node (pods deleted, pods no longer waited for)."""
DEREGISTERED_AT_ANNOTATION = "molt.dev/deregistered-at"
"""When the node's instance left its load balancers' target groups (RFC 3339). Written
once the deregistration call succeeded, so a restart never deregisters twice; a person
may set it (without the wait annotation) to tell Molt the instance is out already."""
DEREGISTRATION_BLOCKED = "load balancers"
"""The lead-in of a ``molt.dev/blocked`` message about a failed deregistration."""
DEREGISTRATION_WAIT_ANNOTATION = "molt.dev/deregistration-wait-until"
"""Until when the first eviction waits for the load balancers to drain the instance
(RFC 3339): the deregistration time plus the longest deregistration delay."""

INTERRUPTION_ANNOTATION = "molt.dev/interruption"
"""A cloud's notice about the node's instance (JSON: kind, id, at, deadline, and the
Auto Scaling lifecycle hook to complete): a spot interruption or an Auto Scaling
termination drains it at once, a rebalance recommendation selects it within budgets."""

REMEDIATION_ANNOTATION = "molt.dev/remediation"
"""Where a node stands in its policy's remediation chain (JSON: the step's index and kind,
when it started, whether Molt cordoned the node, and one line per step already done).
Cleared when the node recovers; a malformed value is reported and the chain starts afresh."""
KWOK_REBOOT_UNTIL_ANNOTATION = "kwok.molt.dev/rebooting-until"
"""On a kwok node being rebooted: when its simulated kubelet comes back (RFC 3339)."""

# Post-launch manifests: what marks the objects Molt applies for a node.
MANIFEST_NODE_LABEL = "molt.dev/node"
"""On an object applied for a node: the node's name."""
MANIFEST_ENTRY_LABEL = "molt.dev/post-launch"
"""On an object applied for a node: the group's ``postLaunch`` entry it comes from."""

# Kubernetes' names Molt acts on.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
CORDON_TAINT = "node.kubernetes.io/unschedulable"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
"""The service controller leaves a node with this label out of every external load
balancer; Molt sets it with the cordon."""
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
