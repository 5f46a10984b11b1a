"""The history store: a bounded buffer that never blocks, batches, retention, the Alembic
migrations, the ``HistoryWrites`` decorator, ``molt history`` output and its plot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from molt.api.instancegroup import InstanceGroup
from molt.api.labels import (
    DEADLINE_ANNOTATION,
    GROUP_LABEL,
    POLICY_ANNOTATION,
    REASON_ANNOTATION,
    REVISION_LABEL,
    ZONE_LABEL,
)
from molt.cli.history import parse_age
from molt.cli.main import app
from molt.controllers.instancegroup.reconciler import CellReconciler
from molt.observe.history import (
    HistoryOptions,
    HistoryQuery,
    HistoryStore,
    HistoryWrites,
    group_decisions,
    make_engine,
    migrate,
    read_history,
)
from molt.observe.metrics import Metrics
from molt.observe.timeline import draw_timeline
from molt.policy.cells import template_revision
from molt.policy.revisions import change_label
from molt.policy.snapshot import NodeCondition, NodeView
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _store(url: str, **options: Any) -> tuple[HistoryStore, Metrics, FakeClock]:
    metrics = Metrics()
    clock = FakeClock(NOW)
    return HistoryStore(HistoryOptions(url=url, **options), clock, metrics), metrics, clock


def _metric(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


def _row(store: HistoryStore, name: str, reason: str = "Selected", **fields: Any) -> None:
    store.record(kind="Node", name=name, reason=reason, message=f"{reason} {name}", **fields)


async def test_a_store_that_is_down_keeps_rows_up_to_the_bound_then_drops_and_counts(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "not-yet"
    store, metrics, _ = _store(f"sqlite:///{missing}/history.db", bound=3, cluster="c")
    for i in range(5):
        _row(store, f"n{i}")
    assert store.buffered == 3
    assert store.dropped == 2
    assert _metric(metrics, "molt_history_rows_dropped_total") == 2
    assert _metric(metrics, "molt_history_rows_buffered") == 3
    assert await store.flush() is False  # the directory does not exist: the store is "down"
    assert store.buffered == 3

    missing.mkdir()  # the store comes back: what was kept is written, in order
    assert await store.flush() is True
    assert store.buffered == 0
    assert _metric(metrics, "molt_history_rows_buffered") == 0
    rows = read_history(f"sqlite:///{missing}/history.db", HistoryQuery(cluster="c"))
    assert [r["name"] for r in rows] == ["n0", "n1", "n2"]
    await store.stop()


async def test_rows_are_written_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _, _ = _store(f"sqlite:///{tmp_path}/h.db", batch=2)
    sizes: list[int] = []
    insert = store._insert

    def counting(rows: list[dict[str, Any]]) -> None:
        sizes.append(len(rows))
        insert(rows)

    monkeypatch.setattr(store, "_insert", counting)
    for i in range(5):
        _row(store, f"n{i}")
    assert await store.flush()
    assert sizes == [2, 2, 1]
    assert len(read_history(f"sqlite:///{tmp_path}/h.db", HistoryQuery())) == 5
    await store.stop()


async def test_retention_deletes_only_this_clusters_old_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    store, _, _ = _store(url, cluster="a", retention=timedelta(days=30))
    other, _, _ = _store(url, cluster="b", retention=timedelta(days=30))
    _row(store, "old", at=NOW - timedelta(days=31))
    _row(store, "recent", at=NOW - timedelta(days=29))
    _row(other, "old-elsewhere", at=NOW - timedelta(days=40))
    assert await store.flush()
    assert await other.flush()
    assert await store.apply_retention() == 1
    names = sorted(r["name"] for r in read_history(url, HistoryQuery()))
    assert names == ["old-elsewhere", "recent"]
    await store.stop()
    await other.stop()


def test_migrations_build_an_empty_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/h.db")
    migrate(engine)
    migrate(engine)  # idempotent
    inspector = inspect(engine)
    columns = {c["name"] for c in inspector.get_columns("molt_history")}
    assert {"time", "cluster", "kind", "name", "group_name", "revision", "zone"} <= columns
    assert {"reason", "message", "change", "details"} <= columns
    indexes = {i["name"] for i in inspector.get_indexes("molt_history")}
    assert "ix_molt_history_cluster_name" in indexes
    with engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalar() == (
            "0002"
        )
    engine.dispose()


def test_upgrading_from_the_previous_migration_keeps_the_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    engine = make_engine(url)
    migrate(engine, "0001")
    assert "change" not in {c["name"] for c in inspect(engine).get_columns("molt_history")}
    with engine.begin() as connection:
        connection.execute(
            text(
                "insert into molt_history (time, cluster, kind, name, reason, message, warning) "
                "values ('2026-03-01 10:00:00.000000', 'c', 'Node', 'n1', 'Cordoned', 'x', 0)"
            )
        )
    migrate(engine)
    engine.dispose()
    rows = read_history(url, HistoryQuery())
    assert [(r["name"], r["reason"], r["change"]) for r in rows] == [("n1", "Cordoned", None)]


async def test_queries_filter_by_node_group_cluster_and_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    store, _, _ = _store(url, cluster="a")
    other, _, _ = _store(url, cluster="b")
    _row(store, "n1", "Selected", group="g1", at=NOW - timedelta(hours=8))
    _row(store, "n1", "Cordoned", group="g1", at=NOW - timedelta(hours=2))
    _row(store, "n2", "Selected", group="g2", at=NOW - timedelta(hours=1))
    _row(other, "n1", "Selected", group="g1", at=NOW)
    assert await store.flush()
    assert await other.flush()

    def story(**query: Any) -> list[tuple[str, str, str]]:
        return [
            (r["cluster"], r["name"], r["reason"]) for r in read_history(url, HistoryQuery(**query))
        ]

    assert story(cluster="a", node="n1") == [("a", "n1", "Selected"), ("a", "n1", "Cordoned")]
    assert story(node="n1") == [
        ("a", "n1", "Selected"),
        ("a", "n1", "Cordoned"),
        ("b", "n1", "Selected"),
    ]
    assert story(group="g2") == [("a", "n2", "Selected")]
    assert story(cluster="a", since=NOW - timedelta(hours=3)) == [
        ("a", "n1", "Cordoned"),
        ("a", "n2", "Selected"),
    ]
    await store.stop()
    await other.stop()


async def test_molt_history_prints_a_table_and_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    store, _, _ = _store(url, cluster="prod")
    _row(store, "node-a", "Selected", group="web", revision="abc123", zone="zone-a")
    _row(store, "node-a", "DrainBlocked", warning=True)
    _row(store, "node-b", "Selected")
    assert await store.flush()
    await store.stop()

    runner = CliRunner()
    result = runner.invoke(app, ["history", "--history", url, "-o", "json", "--node", "node-a"])
    assert result.exit_code == 0, result.output
    story = json.loads(result.output)
    assert [(r["name"], r["reason"], r["warning"]) for r in story] == [
        ("node-a", "Selected", False),
        ("node-a", "DrainBlocked", True),
    ]
    assert story[0]["group"] == "web"
    assert story[0]["revision"] == "abc123"
    assert story[0]["cluster"] == "prod"

    table = runner.invoke(app, ["history", "--history", url, "--cluster", "prod"])
    assert table.exit_code == 0, table.output
    assert "node-a" in table.output
    assert "node-b" in table.output
    assert "DrainBlocked" in table.output
    assert table.output.index("Selected") < table.output.index("DrainBlocked")

    png = tmp_path / "timeline.png"
    plotted = runner.invoke(app, ["history", "--history", url, "-o", "json", "--plot", str(png)])
    assert plotted.exit_code == 0, plotted.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    missing = tmp_path / "nothing-here.db"
    absent = runner.invoke(app, ["history", "--history", f"sqlite:///{missing}"])
    assert absent.exit_code == 1
    assert "no history" in absent.output
    assert not missing.exists()

    assert runner.invoke(app, ["history", "--history", url, "-o", "yaml"]).exit_code == 2
    assert runner.invoke(app, ["history", "--history", url, "--since", "soon"]).exit_code == 2


def test_ages_count_days() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("1d12h") == timedelta(days=1, hours=12)
    assert parse_age("6h") == timedelta(hours=6)
    assert parse_age("0") == timedelta(0)


def test_a_revision_is_labelled_by_what_changed() -> None:
    old = {"instanceTypes": ["m5.large"], "image": "ami-v1", "labels": {"team": "a"}}
    assert change_label(old, {**old, "image": "ami-v2"}) == "image ami-v2"
    assert change_label(old, {**old, "labels": {"team": "b"}}) == "labels.team b"
    assert change_label(old, {**old, "instanceTypes": ["m5.xlarge"]}) == "instanceTypes m5.xlarge"
    assert change_label(None, old) == "initial image ami-v1"


def _node(name: str, **annotations: str) -> NodeView:
    return NodeView(
        name=name,
        created=NOW,
        labels={GROUP_LABEL: "web", REVISION_LABEL: "rev1", ZONE_LABEL: "zone-b"},
        annotations=annotations,
    )


async def test_every_event_becomes_a_row_with_the_nodes_group_revision_zone_and_policy(
    tmp_path: Path,
) -> None:
    cluster = FakeCluster(nodes=[_node("n1")])
    store, _, _ = _store(f"sqlite:///{tmp_path}/h.db", cluster="c")
    writes = HistoryWrites(cluster, store, cluster)
    marks = {
        POLICY_ANNOTATION: "rotate",
        REASON_ANNOTATION: "max-age: 49h > 48h",
        DEADLINE_ANNOTATION: "2026-03-02T12:00:00Z",
    }
    assert await writes.patch_node("n1", annotations=dict(marks))
    await writes.record_event(_node("n1"), "Selected", "selected by policy rotate")
    await writes.record_event(_node("n1", **marks), "Cordoned", "cordoned")
    await writes.record_resource_event(
        InstanceGroup, "web", "CellUnavailable", "zone-a out of capacity", warning=True
    )
    assert [e.reason for e in cluster.events] == ["Selected", "Cordoned", "CellUnavailable"]
    assert await store.flush()
    rows = read_history(f"sqlite:///{tmp_path}/h.db", HistoryQuery())
    assert [(r["kind"], r["name"], r["reason"]) for r in rows] == [
        ("Node", "n1", "Selected"),
        ("Node", "n1", "Cordoned"),
        ("InstanceGroup", "web", "CellUnavailable"),
    ]
    selected = rows[0]
    assert (selected["group_name"], selected["revision"], selected["zone"]) == (
        "web",
        "rev1",
        "zone-b",
    )
    assert selected["policy"] == "rotate"
    assert selected["details"] == {
        "rule_reason": "max-age: 49h > 48h",
        "deadline": "2026-03-02T12:00:00Z",
    }
    assert rows[2]["warning"] is True
    await store.stop()


def _status(current: str, revisions: list[dict[str, Any]], cells: list[str]) -> dict[str, Any]:
    return {
        "currentRevision": current,
        "revisions": revisions,
        "cells": [
            {"zone": zone, "capacityType": "on-demand", "revision": current} for zone in cells
        ],
    }


def test_group_statuses_show_revisions_created_rollouts_rollbacks_and_removed_cells() -> None:
    v1 = {"instanceTypes": ["m5.large"], "image": "ami-v1"}
    v2 = {"instanceTypes": ["m5.large"], "image": "ami-v2"}
    first = _status("r1", [{"name": "r1", "state": "Current", "template": v1}], ["a", "b"])
    assert [r["reason"] for r in group_decisions("web", None, first)] == [
        "RevisionCreated",
        "RevisionCurrent",
    ]
    assert group_decisions("web", first, first) == []
    second = _status(
        "r2",
        [
            {"name": "r2", "state": "Current", "template": v2},
            {"name": "r1", "state": "Previous", "template": v1},
        ],
        ["a", "b"],
    )
    rows = group_decisions("web", first, second)
    assert [(r["reason"], r["revision"]) for r in rows] == [
        ("RevisionCreated", "r2"),
        ("RevisionCurrent", "r2"),
    ]
    assert rows[0]["change"] == "image ami-v2"
    back = _status(
        "r1",
        [
            {"name": "r1", "state": "Current", "template": v1},
            {"name": "r2", "state": "Degraded", "template": v2},
        ],
        ["a", "b"],
    )
    rows = group_decisions("web", second, back)
    assert [(r["reason"], r["revision"], r.get("warning")) for r in rows] == [
        ("RolledBack", "r1", True)
    ]
    gone = _status("r1", [{"name": "r1", "state": "Current", "template": v1}], ["a"])
    assert [
        (r["reason"], r.get("revision"), r.get("zone")) for r in group_decisions("web", back, gone)
    ] == [("RevisionRemoved", "r2", None), ("CellRemoved", None, "b")]


def test_the_timeline_draws_one_bar_per_node_from_first_seen_to_terminated() -> None:
    def at(minutes: float) -> datetime:
        return NOW + timedelta(minutes=minutes)

    def row(minutes: float, kind: str, name: str, reason: str, **extra: Any) -> dict[str, Any]:
        return {"time": at(minutes), "kind": kind, "name": name, "reason": reason, **extra}

    rows = [
        row(
            0,
            "InstanceGroup",
            "web",
            "RevisionCreated",
            group_name="web",
            revision="r2",
            change="image ami-v2",
        ),
        row(0, "Node", "old-1", "Selected", group_name="web", revision="r1"),
        row(6, "Node", "old-1", "DrainBlocked", group_name="web", revision="r1"),
        row(30, "Node", "old-1", "NodeDeleted", group_name="web", revision="r1"),
        row(12, "Node", "new-1", "Registered", group_name="web", revision="r2"),
        row(60, "Node", "new-1", "Cordoned", group_name="web", revision="r2"),
        row(45, "InstanceGroup", "web", "RolledBack", group_name="web", revision="r1"),
    ]
    fig = draw_timeline(rows)
    ax = fig.axes[0]
    bars = {p.get_gid(): p for p in ax.patches if p.get_gid()}
    assert set(bars) == {"old-1", "new-1"}
    assert bars["old-1"].get_x() == pytest.approx(0.0)
    assert bars["old-1"].get_width() == pytest.approx(0.5)
    assert bars["new-1"].get_x() == pytest.approx(0.2)
    assert bars["new-1"].get_width() == pytest.approx(0.8)
    assert bars["old-1"].get_facecolor() != bars["new-1"].get_facecolor()
    marks = {line.get_gid() for line in ax.lines if line.get_gid()}
    assert marks == {"selected:old-1", "blocked:old-1", "rollback:web"}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "web r2 image ami-v2" in legend
    assert "web r1" in legend


async def test_nodes_joining_ready_and_vanishing_are_rows_once_the_caches_synced(
    tmp_path: Path,
) -> None:
    cluster = FakeCluster()
    store, _, _ = _store(f"sqlite:///{tmp_path}/h.db")
    writes = HistoryWrites(cluster, store, cluster)
    cluster.is_synced = False
    writes.node_changed("n0", None, _node("n0"))  # the first LIST after a restart: no news
    assert store.buffered == 0
    cluster.is_synced = True
    joined = _node("n1")
    ready = NodeView(
        name="n1",
        created=NOW,
        labels=joined.labels,
        conditions=(NodeCondition("Ready", "True", NOW),),
    )
    writes.node_changed("n1", None, joined)
    writes.node_changed("n1", joined, ready)
    writes.node_changed("n1", ready, ready)  # nothing new
    writes.node_changed("n1", ready, None)  # deleted, not by the pipeline
    standby = HistoryWrites(cluster, store, cluster, acting=lambda: False)
    standby.node_changed("n2", None, _node("n2"))  # a standby replica records nothing
    assert await store.flush()
    rows = read_history(f"sqlite:///{tmp_path}/h.db", HistoryQuery(node="n1"))
    assert [r["reason"] for r in rows] == ["NodeJoined", "NodeReady", "NodeRemoved"]
    assert rows[0]["group_name"] == "web"
    everything = read_history(f"sqlite:///{tmp_path}/h.db", HistoryQuery())
    assert {r["name"] for r in everything} == {"n1"}
    await store.stop()


def test_molt_run_refuses_a_history_url_it_cannot_use() -> None:
    result = CliRunner().invoke(app, ["run", "--history", "nosuchdb://x/y"])
    assert result.exit_code == 2
    assert "--history" in result.output


async def test_the_group_reconcilers_first_status_records_its_revision(tmp_path: Path) -> None:
    # FakeCluster applies a status patch to what it reads back at once, as a watch cache
    # may do before the patch call returns: the decorator must compare with the status
    # from before the write.
    group = InstanceGroup.model_validate(
        instance_group("web", zones=["zone-a"], replicas=3, minSize=3, maxSize=4)
    )
    cluster = FakeCluster(groups=[group])
    store, _, clock = _store(f"sqlite:///{tmp_path}/h.db")
    writes = HistoryWrites(cluster, store, cluster)
    reconciler = CellReconciler(cluster, writes, clock, {"kwok": FakeProvider(cluster)})
    await reconciler.reconcile("web")
    assert cluster.group_status_patches
    assert await store.flush()
    rows = read_history(f"sqlite:///{tmp_path}/h.db", HistoryQuery(group="web"))
    revision = template_revision(group.spec.template)
    assert [(r["reason"], r["revision"], r["change"]) for r in rows] == [
        ("RevisionCreated", revision, "initial"),
        ("RevisionCurrent", revision, None),
    ]
    await store.stop()
