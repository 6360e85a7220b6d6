"""Generates the Python code for protos/ into gen/python, or checks that it is current.

    python -m listboss_tools.protogen          # regenerate
    python -m listboss_tools.protogen --check  # exit 1 when gen/python is stale

The generated tree is a regular package (``listboss.<area>.v1``): empty
``__init__.py`` files are written beside the generated modules so that the
editable install finds it like any other package.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
OUTPUT_ROOT = ROOT / "gen" / "python"


def generate(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    args = [
        "protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={output}",
        f"--pyi_out={output}",
        f"--grpc_python_out={output}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package_dir in [output / "listboss", *(output / "listboss").rglob("*")]:
        if package_dir.is_dir() and package_dir.name != "__pycache__":
            (package_dir / "__init__.py").touch()


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def stale_files(expected: Path, actual: Path) -> list[str]:
    want, have = _files(expected), _files(actual)
    changed = [p for p in want & have if not filecmp.cmp(expected / p, actual / p, shallow=False)]
    return sorted(str(p) for p in (want ^ have) | set(changed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when gen/python differs from protos/")
    args = parser.parse_args()
    if not args.check:
        generate(OUTPUT_ROOT)
        print(f"generated {OUTPUT_ROOT.relative_to(ROOT)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        stale = stale_files(fresh, OUTPUT_ROOT)
    if stale:
        print("gen/python is stale; run ./dev gen. Differs:", *stale, sep="\n  ", file=sys.stderr)
        raise SystemExit(1)
    print("gen/python is current")


if __name__ == "__main__":
    main()
