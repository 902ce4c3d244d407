"""Instructions per token request, counted by valgrind's callgrind: a figure that does not
move with the machine's load or speed, for before/after comparisons of the token endpoint.

    .venv/bin/python bench/token/instructions.py [--grant client_credentials|refresh_token]
                                                 [--requests 50]

The script runs itself again under ``valgrind --tool=callgrind`` with instrumentation off,
seeds its own database (``tokenpass_bench_profile``, as profile_grant.py does), warms up,
then counts two segments of ``--requests`` requests through ``config.wsgi`` in this one
process: the grant as served, and the same requests with the grant replaced by a fixed
answer of a token response's size (what the request's handling costs the token endpoint
before any grant work: the token lane's since the 2026-12-03 session, Django's before). It prints instructions per request outside the RSA signatures: under valgrind
OpenSSL takes a different code path for them (its count would overstate them several
times), and they are the same fixed cost on every server. Needs valgrind (Debian's
``valgrind`` package). Runs take about a minute; repeated runs agree to about 0.5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = "TOKENPASS_INSTRUCTIONS_CHILD"
# Where the RSA signatures run: the cryptography package's compiled library.
SIGNING_LIBRARY = "_rust.abi3.so"


def control(*args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(os.getpid())], check=True, stdout=subprocess.DEVNULL
    )


def child(grant: str, count: int, workdir: Path) -> None:
    """Under valgrind: warm up, then count each segment into a dump of its own."""
    from profile_grant import grant_driver

    one = grant_driver(workdir, grant)
    for _ in range(20):  # imports, keys, connection
        one()

    def counted(segment: str) -> None:
        for _ in range(10):
            one()
        control("--zero")
        control("--instr=on")
        for _ in range(count):
            one()
        control("--instr=off")
        control(f"--dump={segment}")

    counted("grant")
    # The same requests with the grant's work replaced by a fixed answer (last: a refresh
    # chain cannot go on after it).
    from partners.oauth import grants

    fixed = json.dumps(
        {
            "access_token": "a" * 700,
            "expires_in": 3600,
            "token_type": "Bearer",
            "scope": "openid profile",
            "refresh_token": "r" * 43,
            "id_token": "i" * 900,
        }
    )
    answer = grants.Answer(fixed, [("Cache-Control", "no-store"), ("Pragma", "no-cache")])
    grants.token_answer = lambda **kwargs: answer  # type: ignore[assignment]
    counted("django")


def segment_counts(path: Path) -> tuple[int, int]:
    """(all instructions, instructions in the signing library) of one callgrind dump."""
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            total = int(line.split()[1])
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    signing = 0
    for line in annotated.splitlines():
        if SIGNING_LIBRARY in line:
            match = re.match(r"\s*([\d,]+)", line)
            if match:
                signing += int(match.group(1).replace(",", ""))
    return total, signing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--grant", choices=["client_credentials", "refresh_token"], default="client_credentials"
    )
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    count = max(1, min(args.requests, 2_000))
    if os.environ.get(CHILD):
        child(args.grant, count, Path(os.environ[CHILD]))
        return
    with tempfile.TemporaryDirectory(prefix="tokenpass-instructions-") as tmp:
        workdir = Path(tmp)
        out = workdir / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--grant",
            args.grant,
            "--requests",
            str(count),
        ]
        print(f"counting {count} {args.grant} requests under callgrind ...", flush=True)
        run = subprocess.run(
            command, env={**os.environ, CHILD: str(workdir)}, capture_output=True, text=True
        )
        if run.returncode != 0:
            raise SystemExit(f"the counted run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        dumps = {}
        for path in workdir.glob("callgrind.out.*"):
            head = path.read_text(errors="replace")[:2000]
            for segment in ("grant", "django"):
                if f"Trigger: dump {segment}" in head:
                    dumps[segment] = segment_counts(path)
        if set(dumps) != {"grant", "django"}:
            raise SystemExit(f"missing callgrind dumps: found {sorted(dumps)}")
    grant_total, grant_signing = dumps["grant"]
    django_total, _ = dumps["django"]
    grant_other = (grant_total - grant_signing) / count
    django_other = django_total / count
    print(f"instructions per request, outside RSA signing ({count} requests each):")
    rows = (
        (f"{args.grant} grant as served", grant_other),
        ("request handling (fixed answer)", django_other),
        ("the grant's own work", grant_other - django_other),
        ("RSA signing (overstated, see above)", grant_signing / count),
    )
    for label, value in rows:
        print(f"  {label:<38} {value / 1e6:7.3f} M")


if __name__ == "__main__":
    main()
