"""The frugality section of BENCHMARKS.md, from ``benchmarks/frugality.json``."""

from __future__ import annotations

import textwrap
from typing import Any

DEFAULT = "default (progress)"
VARIANT = "progress, growth_min 5m"
LABELS = {
    DEFAULT: "default (progress)",
    VARIANT: "progress, `growth_min: 5m`",
    "fixed 15 s": "fixed 15 s",
    "fixed 30 s": "fixed 30 s",
    "exp. full jitter 2 s x1.5 cap 60 s": "exponential full jitter",
}


def _per_run(d: dict[str, Any], policy: str, baseline: str, field: str) -> list[float]:
    """The default's ratio to ``baseline`` in each run (same seed, same tasks)."""
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    for r in d["runs"]:
        runs.setdefault(r["seed"], {})[r["policy"]] = r
    return [
        by[policy][field] / by[baseline][field]
        for by in runs.values()
        if policy in by and baseline in by and by[baseline][field]
    ]


def _range(values: list[float]) -> str:
    return f"{min(values):.3f} to {max(values):.3f}" if values else "n/a"


def _table(d: dict[str, Any]) -> str:
    best = d["summary"]["best_baseline"]
    medians = d["summary"]["medians"]
    rows = [
        "| policy | calls/task | p50 | p95 | p99 | max | over budget | late, mean | simulated "
        "| wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for policy, m in medians.items():
        label = LABELS.get(policy, policy) + (" (best baseline)" if policy == best else "")
        calls, p95, over = (
            f"{m['calls_per_task']:.2f}",
            f"{m['p95']:.1f}",
            f"{m['over_budget']:.0f}",
        )
        if policy == DEFAULT:
            calls, p95, over = f"**{calls}**", f"**{p95}**", f"**{over}**"
        rows.append(
            f"| {label} | {calls} | {m['p50']:.1f} | {p95} | {m['p99']:.1f} "
            f"| {m['max_latency']:.1f} | {over} | {m['late_mean']:.2f} "
            f"| {m['simulated_seconds'] / 3600:.2f} h | {m['wall_seconds']:.1f} s |"
        )
    return "\n".join(rows)


def _ratios(d: dict[str, Any]) -> str:
    s = d["summary"]
    best, ratio, targets = s["best_baseline"], s["ratios"][s["best_baseline"]], s["targets"]
    others = "; ".join(
        f"vs {LABELS.get(name, name)}: p95 x{r['p95']:.3f}, calls x{r['calls_per_task']:.3f}"
        for name, r in s["ratios"].items()
        if name != best
    )
    if int(d["runs"][0]["tasks"]) == 2000:
        met = "**Targets met.**" if targets["met"] else "**Targets not met.**"
    else:
        met = "The targets are set at 2,000 tasks; at this size the p95 ratio is " + (
            "within them too." if targets["met"] else "above them (see below)."
        )
    reference = ""
    if int(d["runs"][0]["tasks"]) == 2000 and best == "fixed 30 s":
        b = s["medians"][best]
        reference = (
            f" The issue's independent simulation put fixed 30 s at a p95 of ~75 s and ~24 calls"
            f" per task; this one measures {b['p95']:.1f} s and {b['calls_per_task']:.1f}."
        )
    return _wrap(
        f"Default vs best baseline ({best}): **p95 x{ratio['p95']:.3f}** (per run "
        f"{_range(_per_run(d, DEFAULT, best, 'p95'))}; target <= 0.25), **calls/task "
        f"x{ratio['calls_per_task']:.3f}** ({_range(_per_run(d, DEFAULT, best, 'calls_per_task'))};"
        f" target <= 0.5), **{targets['over_budget']:.0f} requests over budget**, p50 "
        f"x{ratio['p50']:.3f}, p99 x{ratio['p99']:.3f}. {others}. {met}{reference}"
    )


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=95, break_long_words=False, break_on_hyphens=False)


def frugality_section(report: dict[str, Any]) -> str:
    results = report["results"]
    m = report["machine"]
    wall = report.get("wall_seconds")
    took = f"; {wall / 60:.1f} min wall for everything" if wall else ""
    sizes = sorted(results, key=int)
    parts = [
        f"""## Frugality at a budget

The real constraint: one tenant gets ~20 requests/s for everything. `benchmarks/frugality.py`
runs the real `Watcher` (scheduler heap, `RateLimiter`, backoff policy, classifier, memory
store) on a `FakeClock` in autojump mode — hours of simulated time per run in seconds of wall
time — against a simulated source:

- {" and ".join(f"{int(n):,}" for n in sizes)} tasks added together at t = 0, durations
  log-normal (median 600 s, sigma 1), item totals uniform 10..1,000;
- noise model: a poll at time t before the finish F sees
  `count = min(T - 1, floor(T * clamp(t/F * (1 + e), 0, 1)))`, `e ~ U(-0.05, 0.05)` drawn fresh
  for every poll (one seeded stream per task), so counts are whole, advance linearly, jitter
  and never reach T early; at t >= F the poll sees `count = T` and `end_time` set;
- one budget of 20 requests/s (`RateLimiter(20)`), served oldest-due first by the scheduler.

Detection latency is the time of the first poll that sees a task finished minus its true
finish; "over budget" counts requests that are the 21st or later in some 1 s window; "late" is
how long after the time its policy asked for a poll actually went out (queueing for the
budget). Every figure is the median of the runs (one seed each); in each run all policies watch
the same tasks, and the ratios are medians of the per-run ratios. Baselines: fixed 15 s, fixed
30 s, exponential full jitter ignoring progress (2 s, x1.5, cap 60 s); every policy keeps the
default `min: 1s`. "default" is exactly what `PollingConfig()` builds.

Command: `{report["command"]}` (figures in `benchmarks/frugality.json`{took}).
Machine: `nproc` {m["nproc"]}, {m["cpu"]}, Python {m["python"]}, {m["platform"]}.
Run {report["date"]}."""
    ]
    for n in sizes:
        d = results[n]
        parts.append(f"**{int(n):,} tasks** (latencies in seconds)\n\n{_table(d)}\n\n{_ratios(d)}")
        if not d["summary"]["targets"]["met"]:
            parts.append(_bound(d))
    return "\n\n".join(parts)


def _bound(d: dict[str, Any]) -> str:
    medians = d["summary"]["medians"]
    default, best = medians[DEFAULT], d["summary"]["best_baseline"]
    baseline_p95 = medians[best]["p95"]
    variant = medians.get(VARIANT)
    knob = ""
    if variant:
        p95 = variant["p95"] / baseline_p95
        calls = variant["calls_per_task"] / medians[best]["calls_per_task"]
        knob = (
            f" With `growth_min: 5m` the same policy reaches p95 {variant['p95']:.1f} s "
            f"(x{p95:.3f}) at x{calls:.3f} calls."
        )
    return _wrap(
        f"What bounds this run: polling every task once takes at least tasks / 20 s at the budget"
        f" (the limiter keeps a 50 ms window margin), in id order, and tasks that finish before"
        f" their first poll comes round are detected late whatever the policy. That first round"
        f" alone forces a p95 of at least {default['sweep_p95']:.1f} s (p99"
        f" {default['sweep_p99']:.1f} s) on any policy, x{default['sweep_p95'] / baseline_p95:.3f}"
        f" of the baseline, before a single further poll. The default measured p95"
        f" {default['p95']:.1f} s with a mean lateness of {default['late_mean']:.1f} s: its"
        f" `growth_min` (2 min) sends second polls to tasks polled early in the round — the"
        f" hedge against counts that mislead — while first polls are still queued.{knob}"
        f" `growth_min` at or above watches / rate keeps those polls out of the first round; the"
        f" policy cannot see the batch size, so it is a knob (`config.example.yaml`), not"
        f" automatic."
    )
