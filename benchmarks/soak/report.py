"""The soak's report from its ledger and its faults: what was lost, which duplicated runs a
fault explains (the rule is in ``chaos.py``'s docstring), and how long recovery took; as a
dict (``--json``) and as text."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from .config import Config
from .faults import Fault, Injector
from .ledger import Ledger, Run

__all__ = ["build_report", "in_flight", "print_report"]


def in_flight(run: Run, fault: Fault, slack: float, killed_at: dict[int, float]) -> bool:
    """Whether ``run`` was in flight at ``fault`` (the rule in ``chaos.py``'s docstring). A
    run that never returned ended when its worker was killed or exited (``killed_at``, by
    pid)."""
    if fault.pids is not None and run.pid not in fault.pids:
        return False
    end = run.end if run.end is not None else killed_at.get(run.pid)
    return run.start <= fault.end + slack and (end is None or end >= fault.start - slack)


def _next_fault(run: Run, faults: list[Fault]) -> str | None:
    """For a post-mortem: the first fault that hit ``run``'s worker after the run returned,
    and how long after (a duplicate of a run that had returned points at an acknowledgement
    that was held back that long)."""
    if run.end is None:
        return None
    for fault in faults:
        if fault.start >= run.end and (fault.pids is None or run.pid in fault.pids):
            return f"{fault.kind} {fault.start - run.end:.2f} s after it returned"
    return None


def _runs_by(runs: list[Run], attribute: str) -> dict[str, list[Run]]:
    grouped: defaultdict[str, list[Run]] = defaultdict(list)
    for run in runs:
        grouped[getattr(run, attribute)].append(run)
    return grouped


def _gaps(times: list[float]) -> Iterator[tuple[float, float]]:
    for before, after in zip(times, times[1:], strict=False):
        yield after - before, before


def build_report(
    config: Config,
    ledger: Ledger,
    injector: Injector,
    origin: float,
    *,
    kind: str,
    faults_over: float,
    drained: bool,
    drain_seconds: float,
    dead: list[str],
    left: int,
    producer_codes: list[int],
    worker_exits: list[str],
    exited_at: dict[int, float],
    workers_started: int,
    tracebacks: int,
    proxied: int,
) -> dict[str, Any]:
    faults = injector.faults
    confirmed = set(ledger.confirmed)
    lost = sorted(confirmed - set(ledger.finished))
    never_started = sorted(confirmed - ledger.started)
    lid_of = {job_id: lid for lid, job_id in ledger.confirmed.items()}
    dead_confirmed = sorted(lid_of[j] for j in dead if j in lid_of)

    by_job = _runs_by(ledger.runs, "job_id")
    killed_at = {pid: f.start for f in faults if f.kind == "worker-kill" for pid in f.pids or ()}
    # A worker that exited on its own (a crash) ended its runs then: without this they
    # would count as in flight at every later fault, and loosen the bound.
    killed_at.update(exited_at)
    faulted: dict[int, list[str]] = {}  # id(run) -> the kinds of the faults it was in flight at
    for run in ledger.runs:
        kinds = [f.kind for f in faults if in_flight(run, f, config.slack, killed_at)]
        if kinds:
            faulted[id(run)] = kinds
    duplicated = sum(len(runs) - 1 for runs in by_job.values())
    unexplained = {
        job_id: [{**asdict(r), "next_fault": _next_fault(r, faults)} for r in runs]
        for job_id, runs in by_job.items()
        if len(runs) - 1 > sum(id(r) in faulted for r in runs)
    }
    bound_by_kind = Counter(k for kinds in faulted.values() for k in set(kinds))
    # Each duplicated job under the faults its runs were in flight at ("a+b": several).
    duplicated_by_kind: Counter[str] = Counter()
    for runs in by_job.values():
        if len(runs) > 1:
            kinds = sorted({k for r in runs for k in faulted.get(id(r), [])})
            duplicated_by_kind["+".join(kinds) or "unexplained"] += len(runs) - 1
    job_ids_of = {
        lid: {r.job_id for r in runs} for lid, runs in _runs_by(ledger.runs, "lid").items()
    }
    enqueue_duplicates = {lid: sorted(ids) for lid, ids in job_ids_of.items() if len(ids) > 1}
    not_flagged = sum(
        1 for runs in by_job.values() for r in sorted(runs, key=lambda r: r.start)[1:]
        if not r.redelivered
    )  # fmt: skip

    completions = sorted(r.end for r in ledger.runs if r.end is not None)
    # While the producers ran: the drain's tail (a last kill's jobs waiting out their lease
    # with nothing else left to run) is in the per-fault times instead.
    during = [t for t in completions if origin <= t <= faults_over]
    longest_gap, gap_at = max(_gaps(during), default=(0.0, origin))
    ends_of = {lid: sorted(r.end for r in runs if r.end is not None)
               for lid, runs in _runs_by(ledger.runs, "lid").items()}  # fmt: skip
    per_fault: list[dict[str, Any]] = []
    for fault in faults:
        later = [t for t in completions if t >= fault.end]
        next_completion = later[0] - fault.end if later else None
        hit = [
            r for r in ledger.runs if in_flight(r, fault, 0.0, killed_at) and r.start <= fault.start
        ]
        done = [next((t for t in ends_of[r.lid] if t >= r.start), None) for r in hit]
        recovered = (
            max((t - fault.start for t in done if t is not None), default=0.0)
            if None not in done
            else None
        )
        per_fault.append(
            {
                "kind": fault.kind,
                "at": round(fault.start - origin, 2),
                "lasted": round(fault.end - fault.start, 2),
                "detail": fault.detail,
                "in_flight": len(hit),
                "next_completion_after_end": _round(next_completion),
                "all_in_flight_returned_after": _round(recovered),
            }
        )
    by_kind: dict[str, dict[str, Any]] = {}
    for entry in per_fault:
        row = by_kind.setdefault(
            entry["kind"], {"count": 0, "max_next_completion": 0.0, "max_recovered": 0.0}
        )
        row["count"] += 1
        for key, source in (("max_next_completion", "next_completion_after_end"),
                            ("max_recovered", "all_in_flight_returned_after")):  # fmt: skip
            if entry[source] is None or row[key] is None:
                row[key] = None
            else:
                row[key] = max(row[key], entry[source])

    report: dict[str, Any] = {
        "backend": kind,
        "seed": config.seed,
        "duration": config.duration,
        "producers": config.producers,
        "workers": config.workers,
        "concurrency": config.concurrency,
        "rate_per_producer": config.rate,
        "visibility_timeout": config.visibility_timeout,
        "idempotency_keys": config.keys,
        "faults": len(faults),
        "faults_by_kind": dict(Counter(f.kind for f in faults)),
        "fault_kinds_applicable": injector.kinds,
        "confirmed": len(confirmed),
        "given_up": len(ledger.given_up),
        "enqueue_errors": dict(ledger.enqueue_errors),
        "completed": len(confirmed & set(ledger.finished)),
        "runs": len(ledger.runs),
        "ran_unconfirmed": len(ledger.started - confirmed),
        "lost": len(lost),
        "lost_ids": lost[:100],
        "never_started": len(never_started),
        "dead_lettered": len(dead_confirmed),
        "dead_lettered_ids": dead_confirmed[:100],
        "left_in_queue": left,
        "drained": drained,
        "drain_seconds": round(drain_seconds, 1),
        "duplicated_runs": duplicated,
        "duplicated_by_fault": dict(duplicated_by_kind),
        "bound": len(faulted),
        "bound_by_fault": dict(bound_by_kind),
        "unexplained_duplicates": len(unexplained),
        "unexplained": dict(list(unexplained.items())[:20]),
        "enqueue_duplicates": len(enqueue_duplicates),
        "enqueue_duplicate_ids": dict(list(enqueue_duplicates.items())[:20]),
        "later_runs_not_flagged_redelivered": not_flagged,
        "longest_completion_gap": round(longest_gap, 2),
        "longest_completion_gap_at": round(gap_at - origin, 2),
        "recovery_by_fault": by_kind,
        "per_fault": per_fault,
        "workers_started": workers_started,
        "worker_exits_unasked": worker_exits,
        "producer_exit_codes": producer_codes,
        "tracebacks_in_logs": tracebacks,
        "proxied_connections": proxied,
    }
    report["ok"] = bool(
        not lost
        and not dead_confirmed
        and not unexplained
        and not (config.keys and enqueue_duplicates)
        and drained
    )
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def print_report(report: dict[str, Any]) -> None:
    rows = [
        ("backend", report["backend"]),
        ("seed", report["seed"]),
        ("duration", f"{report['duration']:g} s, {report['producers']} producers at "
                     f"{report['rate_per_producer']:g}/s, {report['workers']} workers of "
                     f"concurrency {report['concurrency']}"),
        ("visibility timeout", f"{report['visibility_timeout']:g} s"),
        ("faults", f"{report['faults']} "
                   + json.dumps(report["faults_by_kind"], sort_keys=True)),
        ("jobs confirmed", report["confirmed"]),
        ("enqueue attempts that raised", json.dumps(report["enqueue_errors"], sort_keys=True)),
        ("given up (never confirmed)", report["given_up"]),
        ("jobs completed", report["completed"]),
        ("LOST", f"{report['lost']} (never started: {report['never_started']}, "
                 f"dead-lettered: {report['dead_lettered']})"),
        ("runs", report["runs"]),
        ("duplicated runs", f"{report['duplicated_runs']} "
                            + json.dumps(report["duplicated_by_fault"], sort_keys=True)),
        ("bound (runs in flight at a fault)", f"{report['bound']} "
                                              + json.dumps(report["bound_by_fault"],
                                                           sort_keys=True)),
        ("unexplained duplicates", report["unexplained_duplicates"]),
        ("enqueue duplicates", report["enqueue_duplicates"]),
        ("drained", f"{report['drained']} in {report['drain_seconds']} s, "
                    f"left in queue {report['left_in_queue']}"),
        ("longest completion gap", f"{report['longest_completion_gap']} s at "
                                   f"{report['longest_completion_gap_at']} s"),
        ("workers started", report["workers_started"]),
        ("workers exited unasked", len(report["worker_exits_unasked"])),
        ("tracebacks in logs", report["tracebacks_in_logs"]),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:>{width}}  {value}")
    print()
    print(f"{'fault':<14} {'count':>5} {'next completion after end (max)':>32} "
          f"{'in-flight jobs all returned after (max)':>40}")  # fmt: skip
    for kind, row in sorted(report["recovery_by_fault"].items()):
        nxt, rec = row["max_next_completion"], row["max_recovered"]
        print(f"{kind:<14} {row['count']:>5} {_seconds(nxt):>32} {_seconds(rec):>40}")
    print()
    for entry in report["per_fault"]:
        print(f"  {entry['at']:7.1f} s  {entry['kind']:<14} {entry['detail']}; "
              f"{entry['in_flight']} in flight, all returned after "
              f"{_seconds(entry['all_in_flight_returned_after'])}")  # fmt: skip
    for name in ("lost_ids", "dead_lettered_ids"):
        if report[name]:
            print(f"{name}: {' '.join(report[name])}")
    if report["unexplained"]:
        print("unexplained duplicates:", json.dumps(report["unexplained"], indent=1))
    if report["enqueue_duplicate_ids"]:
        print("enqueue duplicates:", json.dumps(report["enqueue_duplicate_ids"]))
    for line in report["worker_exits_unasked"]:
        print(f"worker exited unasked: {line}")
    print("OK" if report["ok"] else "FAILED")


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"
