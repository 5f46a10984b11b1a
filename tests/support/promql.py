"""The metric names a PromQL expression, Molt's alert rules and its Grafana dashboard use,
and the names a ``/metrics`` exposition carries.

Not a PromQL parser: enough of its lexical structure (strings, label matchers, ranges,
grouping clauses, function calls, keywords) to tell metric names from everything else in
the expressions Molt ships. ``tests/unit/test_metrics.py`` checks it on known expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "start", "end", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def alert_expressions(rules_file: Path) -> dict[str, str]:
    """Each alerting or recording rule's expression, by the rule's name."""
    document = yaml.safe_load(rules_file.read_text())
    return {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in document["groups"]
        for rule in group["rules"]
    }


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _walk(child)
    elif isinstance(node, list):
        for child in node:
            yield from _walk(child)


def dashboard_expressions(dashboard_file: Path) -> dict[str, str]:
    """Every query of the dashboard (panel targets and template variables), by where it is."""
    dashboard = json.loads(dashboard_file.read_text())
    found: dict[str, str] = {}
    for panel in _walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and text:
            # label_values(metric, label): only the first argument is a metric.
            for metric in _LABEL_VALUES.findall(text):
                found[f"variable {variable['name']!r}"] = metric
    return found


def exposition_names(text: str) -> tuple[set[str], set[str]]:
    """Names with at least one sample, and names declared by ``# TYPE`` (histograms also
    as their ``_bucket``, ``_sum`` and ``_count`` series)."""
    sampled: set[str] = set()
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            declared.add(name)
            if kind == "histogram":
                declared.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        elif line and not line.startswith("#"):
            sampled.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return sampled, declared
