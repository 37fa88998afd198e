"""One process sampler for every benchmark: the resident memory and CPU seconds of process trees,
by role, every ``interval`` seconds, as a timeline."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

# A process's role, or None to leave it out; ``tree`` is the index of the tree it was found in.
RoleOf = Callable[[psutil.Process, int], "str | None"]


@dataclass
class ProcessSampler:
    """Samples the processes of ``trees`` until the first tree's root ends.

    Each tick records, by role: ``<role>``, the resident MiB summed over the role's processes;
    ``max:<role>``, the largest one process's (one Python worker, say); ``cpu:<role>``, the user +
    system seconds the role's processes have used so far (each process's last sample kept, so a
    process that ended still counts).

    Attributes:
        trees: ``(pid, counted)``: the process trees to sample, and whether the root itself counts
            (spark-submit execs into the driver's JVM: it does; a standalone worker's JVM does not,
            its executors do).
        role: what each process is.
    """

    trees: list[tuple[int, bool]]
    role: RoleOf
    interval: float = 0.2
    ticks: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (epoch s, figures)
    _cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (role, CPU seconds)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _processes(self) -> list[tuple[int, list[psutil.Process]]] | None:
        found = []
        for index, (pid, counted) in enumerate(self.trees):
            try:
                root = psutil.Process(pid)
                found.append((index, [root] * counted + root.children(recursive=True)))
            except psutil.NoSuchProcess:
                if index == 0:
                    return None  # the measured run has ended
        return found

    def _tick(self) -> bool:
        now = time.time()
        trees = self._processes()
        if trees is None:
            return False
        figures: dict[str, float] = {}
        for index, processes in trees:
            for process in processes:
                try:
                    role = self.role(process, index)
                    if role:
                        rss = process.memory_info().rss / 2**20
                        figures[role] = figures.get(role, 0.0) + rss
                        figures[f"max:{role}"] = max(figures.get(f"max:{role}", 0.0), rss)
                        times = process.cpu_times()
                        self._cpu[process.pid] = (role, times.user + times.system)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        for role, seconds in self._cpu.values():
            figures[f"cpu:{role}"] = figures.get(f"cpu:{role}", 0.0) + seconds
        self.ticks.append((now, figures))
        return True

    def _run(self) -> None:
        while self._tick() and not self._stop.wait(self.interval):
            pass

    def peak(self, *figures: str, start: float = 0.0, end: float = math.inf) -> float:
        """The largest sum of ``figures`` at one tick between ``start`` and ``end`` (epoch
        seconds); 0 if none."""
        sums = (sum(f.get(name, 0.0) for name in figures) for t, f in self.ticks if start <= t <= end)
        return max(sums, default=0.0)

    def cpu_seconds(self, role: str, start: float = 0.0, end: float = math.inf) -> float:
        """The CPU seconds the role's processes used between ``start`` and ``end`` (epoch seconds),
        to the sampling interval: the last tick at or before each."""

        def used(at: float) -> float:
            before = [(t, f.get(f"cpu:{role}", 0.0)) for t, f in self.ticks if t <= at]
            return max(before, default=(0.0, 0.0))[1]

        return used(end) - used(start)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Sample in a thread while the block runs."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
