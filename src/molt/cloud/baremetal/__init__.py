"""The baremetal provider: a pool of physical hosts driven through their BMCs over Redfish.

``inventory`` holds the pure parts (host claims, picking a free host, matching Nodes to
hosts), ``store`` keeps the claims in a ConfigMap, ``redfish`` talks to one BMC through
sushy, and ``provider`` is the ``Provider`` the controllers use.
"""

from molt.cloud.baremetal.provider import BareMetalProvider, baremetal_provider_from_environment

__all__ = ["BareMetalProvider", "baremetal_provider_from_environment"]
