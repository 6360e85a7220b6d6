"""`buf breaking`, as `./dev lint` and CI run it, fails when a contract changes incompatibly:
run on a copy of protos/ in a throwaway git repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "node_modules" / ".bin" / "buf"
EVENT_PROTO = Path("protos/listboss/events/v1/event.proto")

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is installed by `npm ci` (./dev test does it)")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def contracts(tmp_path: Path) -> Path:
    """A git repository holding buf.yaml and protos/ as committed here."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "."],
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "contracts"],
    ):
        assert run(*command, cwd=tmp_path).returncode == 0
    return tmp_path


def breaking(repo: Path) -> subprocess.CompletedProcess:
    return run(str(BUF), "breaking", "--against", ".git#ref=HEAD", cwd=repo)


def test_unchanged_contracts_pass(contracts):
    result = breaking(contracts)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_changed_field_number_fails(contracts):
    proto = contracts / EVENT_PROTO
    text = proto.read_text()
    assert "  string email = 1;" in text
    proto.write_text(text.replace("  string email = 1;", "  string email = 21;", 1))
    result = breaking(contracts)
    assert result.returncode != 0
    assert "email" in result.stdout + result.stderr


def test_an_added_field_passes(contracts):
    proto = contracts / EVENT_PROTO
    text = proto.read_text()
    proto.write_text(text.replace("  string email = 1;", "  string email = 1;\n  string nickname = 99;", 1))
    result = breaking(contracts)
    assert result.returncode == 0, result.stdout + result.stderr
