"""CPU time of processes, read from Linux's ``/proc``, for the benchmarks' "where the CPU goes"
figures.

``/proc/<pid>/stat`` holds a process's user and system time (all its threads) and the time of
its children that it has waited for, in clock ticks (``SC_CLK_TCK``, usually 100 a second, so
10 ms is the resolution). A benchmark reads each process at the start and at the end of its
measured window and divides the difference by the events it handled.

A process that exits during the window takes its time with it, unless its parent waits for it:
then the time moves into the parent's *reaped children* figure. A server that forks a process
per connection (PostgreSQL) is measured as a tree (:func:`tree_cpu`): the live processes under
the root plus what the root has reaped. Its difference between two readings counts a child that
exited in between through the root's reaped time, and a child started in between from zero, so
it holds whatever forks and exits meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
MICROS_PER_TICK = 1_000_000 // CLOCK_TICKS_PER_SECOND
PROC = "/proc"


@dataclass(frozen=True)
class ProcessCpu:
    """One reading of one process: its own CPU time and that of the children it reaped, in µs."""

    pid: int
    ppid: int
    name: str  # the executable's name (``comm``), at most 15 characters
    cpu_us: int  # user + system time of all its threads
    reaped_children_us: int  # user + system time of the children it has waited for


def process_cpu(pid: int) -> ProcessCpu | None:
    """A reading of process ``pid``; None once it is gone (or was never there)."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as stat:
            text = stat.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The name sits in parentheses and may itself hold spaces and parentheses: split at the last.
    head, _, tail = text.rpartition(")")
    name = head.partition("(")[2]
    fields = tail.split()
    # fields[0] is field 3 of proc(5) (state): ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
    ppid, utime, stime, cutime, cstime = (int(fields[index - 3]) for index in (4, 14, 15, 16, 17))
    return ProcessCpu(
        pid=pid,
        ppid=ppid,
        name=name,
        cpu_us=(utime + stime) * MICROS_PER_TICK,
        reaped_children_us=(cutime + cstime) * MICROS_PER_TICK,
    )


def all_processes() -> list[ProcessCpu]:
    """A reading of every process this user can see."""
    readings = []
    for entry in os.listdir(PROC):
        if entry.isdigit() and (reading := process_cpu(int(entry))) is not None:
            readings.append(reading)
    return readings


def command_line(pid: int) -> str:
    """What ``ps`` shows as the command (arguments joined by spaces; a PostgreSQL backend
    rewrites it to name its user, database and state); empty once the process is gone."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode("utf-8", errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


@dataclass(frozen=True)
class TreeCpu:
    """One reading of a process tree: each live process under (and including) the root, and the
    time of the children the root has reaped."""

    root: int
    live: Mapping[int, ProcessCpu] = field(default_factory=dict)
    reaped_us: int = 0

    @property
    def total_us(self) -> int:
        return sum(reading.cpu_us for reading in self.live.values()) + self.reaped_us


def child_pids(pid: int) -> list[int] | None:
    """The children of process ``pid`` from ``/proc/<pid>/task/<tid>/children`` (each thread's),
    far cheaper than reading every process; None where the kernel does not offer those files."""
    try:
        threads = os.listdir(f"{PROC}/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return []
    children: list[int] = []
    for thread in threads:
        try:
            with open(f"{PROC}/{pid}/task/{thread}/children") as listing:
                children.extend(int(child) for child in listing.read().split())
        except (FileNotFoundError, ProcessLookupError):
            if not os.path.exists(f"{PROC}/{pid}/task/{thread}"):
                continue  # the thread ended meanwhile
            return None
    return children


def tree_cpu(root: int) -> TreeCpu:
    """A reading of ``root`` and all its descendants; an empty one when ``root`` is gone."""
    root_reading = process_cpu(root)
    if root_reading is None:
        return TreeCpu(root)
    live = {root: root_reading}
    waiting = [root]
    by_parent: dict[int, list[ProcessCpu]] | None = None  # every process, read once if needed
    while waiting:
        parent = waiting.pop()
        pids = child_pids(parent)
        if pids is None:
            if by_parent is None:
                by_parent = {}
                for process in all_processes():
                    by_parent.setdefault(process.ppid, []).append(process)
            children = by_parent.get(parent, [])
        else:
            children = [reading for pid in pids if (reading := process_cpu(pid)) is not None]
        for child in children:
            if child.pid not in live:
                live[child.pid] = child
                waiting.append(child.pid)
    return TreeCpu(root, live, root_reading.reaped_children_us)


def tree_cpu_us_between(start: TreeCpu, end: TreeCpu) -> int:
    """The tree's CPU time between two readings: a process that exited in between counts
    through the root's reaped time, one that started in between from zero."""
    return end.total_us - start.total_us


def cpu_us_between(start: ProcessCpu | None, end: ProcessCpu | None) -> int:
    """One process's own CPU time between two readings (0 when either is missing)."""
    if start is None or end is None or start.pid != end.pid:
        return 0
    return end.cpu_us - start.cpu_us


def live_cpu_us_between(start: TreeCpu, end: TreeCpu, pids: Iterable[int]) -> int:
    """The CPU time between two readings of those of ``pids`` that were alive at the end (one
    started in between counts from zero). A process that exited in between is not among them:
    its time is only in the tree's reaped total."""
    total = 0
    for pid in pids:
        if pid in end.live:
            before = start.live.get(pid)
            total += end.live[pid].cpu_us - (before.cpu_us if before is not None else 0)
    return total


def machine_busy_us() -> tuple[int, int]:
    """The machine's CPU time since boot, summed over its cores, from ``/proc/stat``: (busy,
    all), in µs. Busy excludes idle and I/O wait. Over a window, busy / all is how loaded the
    cores were, whoever loaded them."""
    with open(f"{PROC}/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice).
    ticks = sum(values[:8])
    idle = values[3] + values[4]
    return (ticks - idle) * MICROS_PER_TICK, ticks * MICROS_PER_TICK
