"""The soak's sampling (``scripts/chaos --soak 3600``): what the router holds as an hour goes by.

Every ``every_s`` the :class:`Sampler` records, per role process: resident memory (the process
and its children) and open file descriptors; and for the run: the ledger topic's size on the
brokers' disks (each partition's largest copy), ingest's consumer lag and the review role's
backlog of unrecorded requests (both from the roles' own ``/metrics``), and the ledger's entries.

:func:`table` prints the samples (every ``rows``-th one) and, per series, the fitted growth per
hour over the second half (a leak grows there; start-up and the first faults are in the first
half): flat or bounded is what the soak asserts. :func:`plot` draws the same as a PNG
(matplotlib, the ``analysis`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from stream_router.sandbox.process import ManagedProcess, tree_rss_bytes

MIB = 1024 * 1024


@dataclass
class Sample:
    at_s: float  #: since the sampling began
    rss_mib: dict[str, float] = field(default_factory=dict)  #: per role
    fds: dict[str, int] = field(default_factory=dict)  #: per role
    ledger_mib: float = 0.0
    lag: float = 0.0  #: ingest's consumer lag, records
    backlog: float = 0.0  #: review requests not yet recorded
    ledger_entries: float = 0.0  #: every entry the review instances hold


class Sampler:
    """Samples every ``every_s`` until cancelled (see the module docstring)."""

    def __init__(
        self,
        procs: Callable[[], dict[str, ManagedProcess]],
        ports: dict[str, int],
        ledger_dirs: Callable[[], list[Path]],
        every_s: float = 30.0,
    ) -> None:
        self.procs = procs
        self.ports = ports
        self.ledger_dirs = ledger_dirs
        self.every_s = every_s
        self.samples: list[Sample] = []

    async def run(self) -> None:
        began = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                sample = Sample(time.monotonic() - began)
                for name, proc in self.procs().items():
                    pid = proc.pid
                    if pid is None or not proc.running():
                        continue
                    with contextlib.suppress(OSError):
                        sample.rss_mib[name] = tree_rss_bytes(pid) / MIB
                        sample.fds[name] = len(os.listdir(f"/proc/{pid}/fd"))
                for port in self.ports.values():
                    metrics = await _metrics(http, port)
                    sample.lag += metrics.get("stream_router_ingest_consumer_lag", 0.0)
                    sample.backlog += metrics.get("stream_router_review_requests_backlog", 0.0)
                    sample.ledger_entries += metrics.get("stream_router_review_ledger_entries", 0.0)
                sample.ledger_mib = _largest_copies(self.ledger_dirs()) / MIB
                self.samples.append(sample)
                await asyncio.sleep(self.every_s)  # the sampling period


async def _metrics(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """Each metric's value summed over its labels; empty when the role does not answer."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def _largest_copies(partition_dirs: list[Path]) -> int:
    """Bytes of the topic: per partition (a directory name), its largest copy on any node."""
    largest: dict[str, int] = {}
    for directory in partition_dirs:
        size = 0
        with contextlib.suppress(OSError):
            size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
        largest[directory.name] = max(size, largest.get(directory.name, 0))
    return sum(largest.values())


def _series(samples: list[Sample]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        for role, rss in sample.rss_mib.items():
            out.setdefault(f"RSS {role} (MiB)", []).append((sample.at_s, rss))
        for role, fds in sample.fds.items():
            out.setdefault(f"fds {role}", []).append((sample.at_s, float(fds)))
        for name, value in (("ledger on disk (MiB)", sample.ledger_mib),
                            ("ledger entries", sample.ledger_entries),
                            ("consumer lag", sample.lag),
                            ("review backlog", sample.backlog)):  # fmt: skip
            out.setdefault(name, []).append((sample.at_s, value))
    return out


def growth_per_hour(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope over the second half of the points, per hour."""
    half = [p for p in points if p[0] >= points[-1][0] / 2] if points else []
    if len(half) < 3:
        return None
    return statistics.linear_regression([t for t, _ in half], [v for _, v in half]).slope * 3600


def table(samples: list[Sample], rows: int = 12) -> list[str]:
    if not samples:
        return ["soak: no samples"]
    series = _series(samples)
    names = list(series)
    step = max(1, len(samples) // rows)
    lines = ["soak samples: minute | " + " | ".join(names)]
    for sample in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        values = []
        for name in names:
            found = [v for t, v in series[name] if t == sample.at_s]
            values.append(f"{found[0]:,.0f}" if found else "-")
        lines.append(f"{sample.at_s / 60:5.1f} | " + " | ".join(values))
    lines.append("second half, fitted growth per hour: " + "; ".join(
        f"{name} {g:+,.1f}" if (g := growth_per_hour(series[name])) is not None
        else f"{name} -" for name in names
    ))  # fmt: skip
    return lines


def plot(samples: list[Sample], path: Path) -> bool:
    """The samples as a PNG at ``path``; False when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415  (the analysis extra)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    series = _series(samples)
    groups = [("RSS", "resident memory, MiB"), ("fds", "open file descriptors"),
              ("ledger on disk", "ledger topic on disk, MiB"),
              ("ledger entries", "ledger entries held"),
              ("consumer lag", "ingest lag, records"),
              ("review backlog", "review backlog, requests")]  # fmt: skip
    figure, axes = plt.subplots(len(groups), 1, figsize=(9, 2.4 * len(groups)), sharex=True)
    for axis, (prefix, title) in zip(axes, groups, strict=True):
        for name, points in series.items():
            if name.startswith(prefix):
                axis.plot([t / 60 for t, _ in points], [v for _, v in points], label=name)
        axis.set_title(title, fontsize=9)
        axis.set_ylim(bottom=0)  # growth shown against the whole, not magnified
        axis.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("minutes")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
