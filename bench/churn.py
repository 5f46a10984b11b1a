"""How evenly the demo fleet's replacements run: per-hour peak-to-mean over its 96 h.

The built-in demo runs twice with Molt's own controller: once with the policy it had
before even churn (``maxAge: 48h, maxAgeJitter: 4h``) and once as shipped (``maxAgeSpread``,
see ``molt.sim.builtin``). For each it prints the report's replacement rate (the busiest
hour against the mean hour, goal <= 1.5), overall and for max age alone, and two figures
that say what the goal can mean here: the floor an ideally even schedule would reach at
the same mean (hourly counts are whole nodes, so a mean of 1.25 an hour still has hours
of 2: ceil(mean) / mean), and the same ratio over 6 h windows. The overall figure also
names what filled its busiest hour (the template rollout replaces the whole worker group
within it, by design). A third figure is the cost of a selection pass over 10,000 nodes
with the spread, against the same pass with jitter (goal: at most half again).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter

from bench.plan_compute import NOW, POLICY, fleet
from molt.api.terminationpolicy import TerminationPolicy
from molt.cli.logs import configure_logging
from molt.policy.selection import select_candidates
from molt.sim.builtin import DEMO_YAML, demo_scenario
from molt.sim.record import Lifetime
from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import Scenario, parse_scenario

GOAL = 1.5
SHIPPED_RULES = "rules: {maxAge: 48h, maxAgeSpread: 48h}"
BEFORE_RULES = "rules: {maxAge: 48h, maxAgeJitter: 4h}"


def before_scenario() -> Scenario:
    """The demo with the policy it had before ``maxAgeSpread``."""
    assert SHIPPED_RULES in DEMO_YAML, "the demo's policy changed: update bench/churn.py"
    return parse_scenario(DEMO_YAML.replace(SHIPPED_RULES, BEFORE_RULES), "<demo before>")


def _reason(life: Lifetime) -> str:
    return (life.reason or "selected").split(":", 1)[0]


def _per_window(lives: list[Lifetime], end: float, window: float) -> list[int]:
    counts = [0] * max(1, int(end // window))
    for life in lives:
        assert life.ended is not None
        counts[min(len(counts) - 1, int(life.ended // window))] += 1
    return counts


def _line(label: str, lives: list[Lifetime], end: float) -> str:
    hourly = _per_window(lives, end, 3600)
    mean = sum(hourly) / len(hourly)
    six = _per_window(lives, end, 6 * 3600)
    six_mean = sum(six) / len(six)
    return (
        f"{label}: peak-to-mean {max(hourly) / mean:.2f} per hour (goal <= {GOAL}; "
        f"{max(hourly)} in the busiest hour, mean {mean:.2f}; an even schedule at this mean: "
        f"{math.ceil(mean) / mean:.2f}), {max(six) / six_mean:.2f} per 6 h"
    )


def measure(name: str, scenario: Scenario) -> None:
    sim = Simulation(scenario)
    sim.run()
    end = sim.clock.seconds
    report = build_report(sim)
    replaced = [
        life
        for life in sim.recorder.lifetimes.values()
        if life.selected is not None and life.ended is not None
    ]
    aged = [life for life in replaced if _reason(life) == "max-age"]
    hourly = _per_window(replaced, end, 3600)
    busiest = hourly.index(max(hourly))
    in_busiest = Counter(_reason(x) for x in replaced if int((x.ended or 0) // 3600) == busiest)
    print(f"churn {name}: {len(replaced)} replaced, oldest node {report['maxNodeAgeHours']} h")
    print(
        "  "
        + _line("overall", replaced, end)
        + f"; busiest hour {busiest}-{busiest + 1} h: "
        + ", ".join(f"{reason} {count}" for reason, count in in_busiest.most_common())
    )
    print("  " + _line("max age alone", aged, end))


def selection_cost(size: int = 10_000, repeats: int = 5) -> None:
    """One selection pass over ``size`` nodes with the spread (the schedule recomputed on
    every pass) against the same pass with jitter."""
    snapshot = fleet(size)
    rules = POLICY.spec.rules
    spread = POLICY.model_copy(
        update={
            "spec": POLICY.spec.model_copy(
                update={
                    "rules": rules.model_copy(
                        update={"max_age_jitter": None, "max_age_spread": "24h"}
                    )
                }
            )
        }
    )

    def timed(policy: TerminationPolicy) -> list[float]:
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            select_candidates(policy, snapshot, NOW)
            timings.append(time.perf_counter() - started)
        return timings

    jitter = statistics.median(timed(POLICY))
    leveled = statistics.median(timed(spread))
    print(
        f"selection pass over {size} nodes: jitter {jitter * 1000:.0f} ms, maxAgeSpread "
        f"{leveled * 1000:.0f} ms (median of {repeats}; ratio {leveled / jitter:.2f}, "
        "goal <= 1.5)"
    )


def run() -> None:
    configure_logging(level="error")
    selection_cost()
    measure(f"before ({BEFORE_RULES[7:]})", before_scenario())
    measure(f"after ({SHIPPED_RULES[7:]})", demo_scenario())


if __name__ == "__main__":
    run()
