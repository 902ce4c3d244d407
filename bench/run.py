"""Run every benchmark under bench/ (each bench/<name>/run.py) one after the other, as
`make bench` does. Pass names to run only those: `python bench/run.py token login`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    wanted = set(sys.argv[1:])
    scripts = sorted(p for p in HERE.glob("*/run.py") if not wanted or p.parent.name in wanted)
    if not scripts:
        sys.exit(f"no benchmark found for {sorted(wanted)}")
    failed = []
    for script in scripts:
        print(f"== bench/{script.parent.name} ==", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.parent.name)
        print(flush=True)
    if failed:
        sys.exit(f"benchmarks that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
