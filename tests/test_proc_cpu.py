"""Reading CPU time from /proc (listboss_tools.proc_cpu): this test process's own readings, a
child burning a bounded amount of CPU, and a tree whose root reaps a child that exited in
between two readings (how PostgreSQL's per-connection processes are measured). The assertions
are on orderings and ranges, never on how long anything took."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from listboss_tools import proc_cpu

# A child that burns about BURN_S seconds of CPU (and never more than 5 s of wall time), prints
# the CPU time it used by its own measure, and waits for a line on stdin before exiting.
BURN_S = 0.3
BURNER = f"""
import sys, time
deadline = time.monotonic() + 5
while time.process_time() < {BURN_S} and time.monotonic() < deadline:
    sum(range(1000))
print(int(time.process_time() * 1e6), flush=True)
sys.stdin.readline()
"""
# A parent that, on each line it reads, runs one burner to its end and reaps it; prints the
# burner's own CPU figure, then waits for the next line (an empty one ends it).
REAPER = f"""
import subprocess, sys
burner = {BURNER!r}
while sys.stdin.readline().strip():
    child = subprocess.Popen([sys.executable, "-c", burner], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    used = child.stdout.readline().strip()
    child.communicate("\\n", timeout=10)
    print(used, flush=True)
"""
# /proc gives user and system time each in whole ticks, rounded down: a reading may be short of
# a process's own clock by up to a tick of each, and a little ahead by the time it took to print.
SLACK_US = 3 * proc_cpu.MICROS_PER_TICK


def spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def finish(process: subprocess.Popen[str]) -> None:
    process.communicate("\n", timeout=10)


def test_reads_this_process_and_its_time_only_grows():
    first = proc_cpu.process_cpu(os.getpid())
    assert first is not None
    assert (first.pid, first.ppid) == (os.getpid(), os.getppid())
    assert first.name and first.cpu_us >= 0 and first.reaped_children_us >= 0
    deadline = time.monotonic() + 5
    start = time.process_time()
    while time.process_time() - start < 0.05 and time.monotonic() < deadline:
        sum(range(1000))
    second = proc_cpu.process_cpu(os.getpid())
    assert second is not None
    assert second.cpu_us >= first.cpu_us
    # Whole ticks, rounded down: never more than what Python's own clock says.
    assert second.cpu_us <= int(time.process_time() * 1e6) + SLACK_US


def test_a_process_that_is_gone_reads_as_none():
    process = spawn("pass")
    finish(process)
    assert proc_cpu.process_cpu(process.pid) is None
    assert proc_cpu.command_line(process.pid) == ""


def test_a_child_burning_cpu_is_read_while_it_runs_and_reaped_after():
    parent_before = proc_cpu.process_cpu(os.getpid())
    burner = spawn(BURNER)
    try:
        used_by_its_own_clock = int(read_line(burner))
        reading = proc_cpu.process_cpu(burner.pid)
        assert reading is not None
        assert reading.ppid == os.getpid()
        assert "python" in reading.name or "python" in proc_cpu.command_line(burner.pid)
        assert used_by_its_own_clock - SLACK_US <= reading.cpu_us <= used_by_its_own_clock + SLACK_US
        tree = proc_cpu.tree_cpu(os.getpid())
        assert burner.pid in tree.live
        children = proc_cpu.child_pids(os.getpid())
        assert children is None or burner.pid in children
    finally:
        finish(burner)
    parent_after = proc_cpu.process_cpu(os.getpid())
    assert parent_before is not None and parent_after is not None
    # Once waited for, its time is in this process's reaped-children figure.
    reaped = parent_after.reaped_children_us - parent_before.reaped_children_us
    assert reaped >= reading.cpu_us
    assert proc_cpu.cpu_us_between(parent_before, parent_after) >= 0


def test_a_tree_counts_the_children_that_exited_between_two_readings():
    reaper = spawn(REAPER)
    try:
        before = proc_cpu.tree_cpu(reaper.pid)
        assert set(before.live) == {reaper.pid}
        assert reaper.stdin is not None
        reaper.stdin.write("burn\n")
        reaper.stdin.flush()
        burned = int(read_line(reaper))
        after = proc_cpu.tree_cpu(reaper.pid)
    finally:
        finish(reaper)
    # The burner is gone, yet its time is in the tree's difference (through the root's reaped time).
    assert set(after.live) == {reaper.pid}
    assert proc_cpu.tree_cpu_us_between(before, after) >= burned - SLACK_US
    assert proc_cpu.live_cpu_us_between(before, after, [reaper.pid]) >= 0
    assert proc_cpu.tree_cpu(reaper.pid).live == {}


def test_a_tree_is_found_by_reading_every_process_where_the_kernel_lists_no_children(monkeypatch):
    burner = spawn(BURNER)
    try:
        read_line(burner)
        listed = proc_cpu.tree_cpu(os.getpid())
        monkeypatch.setattr(proc_cpu, "child_pids", lambda pid: None)
        scanned = proc_cpu.tree_cpu(os.getpid())
    finally:
        finish(burner)
    assert {os.getpid(), burner.pid} <= set(listed.live)
    assert {os.getpid(), burner.pid} <= set(scanned.live)


def test_the_machine_is_busy_for_part_of_its_time():
    busy, total = proc_cpu.machine_busy_us()
    assert 0 < busy <= total
    later_busy, later_total = proc_cpu.machine_busy_us()
    assert later_busy >= busy and later_total >= total


@pytest.mark.parametrize("name", ["plain", "with space", "with) paren"])
def test_names_with_spaces_and_parentheses_are_read(tmp_path, name):
    # The kernel shows the executable's file name: a copy of this Python named so.
    executable = tmp_path / name
    executable.symlink_to(sys.executable)
    process = subprocess.Popen(
        [str(executable), "-c", "import sys; print('up', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(process) == "up"
        reading = proc_cpu.process_cpu(process.pid)
    finally:
        finish(process)
    assert reading is not None
    assert reading.name == name[:15]
    assert reading.ppid == os.getpid()
    assert reading.cpu_us >= 0 and reading.reaped_children_us >= 0
