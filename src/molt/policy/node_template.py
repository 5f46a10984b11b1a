"""Node fields in templates: ``{{ .Node.Name }}`` and friends, replaced in every string of
an object (a post-launch manifest) or in one string (an action's address).

Pure. The syntax is Go template's, as the API documents it, limited to field lookups:
``.Node.Name``, ``.Node.InternalIP`` (the first address, InternalIP first), ``.Node.Zone``,
``.Node.Group``, ``.Node.Revision`` and ``index .Node.Labels "KEY"``. Anything else in
``{{ }}`` is an error naming it, never left in place or replaced by nothing.
"""

from __future__ import annotations

import re
from typing import Any

from molt.policy.snapshot import NodeView

PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
LABEL_LOOKUP = re.compile(r'^index\s+\.Node\.Labels\s+"([^"]+)"$')


class TemplateError(ValueError):
    """A placeholder Molt does not know, or a node without the value it asks for."""


def _value(expression: str, node: NodeView) -> str:
    label = LABEL_LOOKUP.match(expression)
    if label is not None:
        found = node.labels.get(label.group(1))
        if found is None:
            raise TemplateError(f"node {node.name} has no label {label.group(1)!r}")
        return found
    fields: dict[str, str | None] = {
        ".Node.Name": node.name,
        ".Node.InternalIP": node.addresses[0] if node.addresses else None,
        ".Node.Zone": node.zone,
        ".Node.Group": node.group,
        ".Node.Revision": node.revision,
    }
    if expression not in fields:
        known = ", ".join(f"{{{{ {name} }}}}" for name in fields)
        raise TemplateError(
            f"unknown placeholder {{{{ {expression} }}}} (known: {known} and "
            '{{ index .Node.Labels "KEY" }})'
        )
    value = fields[expression]
    if value is None:
        raise TemplateError(f"node {node.name} has no value for {{{{ {expression} }}}} yet")
    return value


def render_text(text: str, node: NodeView) -> str:
    """``text`` with every placeholder replaced; TemplateError for an unknown one."""
    return PLACEHOLDER.sub(lambda match: _value(match.group(1), node), text)


def render_object(template: Any, node: NodeView) -> Any:
    """A deep copy of ``template`` with placeholders replaced in every string value."""
    if isinstance(template, str):
        return render_text(template, node)
    if isinstance(template, list):
        return [render_object(item, node) for item in template]
    if isinstance(template, dict):
        return {key: render_object(value, node) for key, value in template.items()}
    return template


def uses_address(template: Any) -> bool:
    """Whether any string of ``template`` asks for the node's address."""
    if isinstance(template, str):
        return any(m.group(1) == ".Node.InternalIP" for m in PLACEHOLDER.finditer(template))
    if isinstance(template, list):
        return any(uses_address(item) for item in template)
    if isinstance(template, dict):
        return any(uses_address(value) for value in template.values())
    return False
