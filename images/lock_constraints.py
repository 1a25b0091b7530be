"""Write ``constraints.txt``: the exact versions of every runtime dependency the images install.

The versions are those of the environment this runs in (CI's, after ``make install``), resolved
for the images' extras by pip itself, so the operator and inference images install the very
Python packages the tests ran against. Run with ``make constraints`` after changing dependencies.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRAS = "operator,serve"
HEADER = (
    "# Exact versions of the runtime dependencies of the images (extras: {extras}), taken from the\n"
    "# environment CI tests. Written by `make constraints` (images/lock_constraints.py); do not edit.\n"
)


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        installed = Path(scratch) / "installed.txt"
        report = Path(scratch) / "report.json"
        frozen = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
        ).stdout
        installed.write_text(frozen)
        # Resolve the images' dependency closure, pinned to what is installed here.
        pip_install = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        subprocess.run(
            [*pip_install, "--report", str(report), "--constraint", str(installed), f"{REPO}[{EXTRAS}]"], check=True
        )
        resolved = json.loads(report.read_text())["install"]
    pins = sorted(
        (item["metadata"]["name"], item["metadata"]["version"])
        for item in resolved
        if item["metadata"]["name"] != "edgeaigc"
    )
    lines = [f"{name}=={version}\n" for name, version in sorted(pins, key=lambda pin: pin[0].lower())]
    (REPO / "constraints.txt").write_text(HEADER.format(extras=EXTRAS) + "".join(lines))
    print(f"constraints.txt: {len(lines)} pinned runtime dependencies")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
