"""Instructions per token request in a gunicorn worker, counted by valgrind's callgrind:
what a grant costs once gunicorn's own handling of the connection and the request is counted
too, for Tokenpass and for the stateless floor (bench/token/floor.py with FLOOR_STATELESS,
which does for client credentials only what oidc-provider does).

    .venv/bin/python bench/token/server_instructions.py [--grant client_credentials|refresh_token]
                                                        [--requests 1000]

instructions.py counts the token lane alone, called in one process; this counts everything a
worker of ``gunicorn -c config/gunicorn.py`` runs for a request: reading and parsing it,
handing the connection between the worker's threads, the application, writing the answer.
Each server runs under ``valgrind --tool=callgrind`` with one worker, twice: once answering
only a warm-up, once answering the warm-up and then ``--requests`` more, from two keep-alive
connections. A forked worker cannot be switched on and off from outside, so the figure is
the difference between the two runs, per request; repeated runs agreed to 0.1 %. The RSA
signatures are left out, as in instructions.py. The remembered client
(OAUTH_CLIENT_CACHE_SECONDS) is kept for the whole run: under valgrind a second passes in a
few dozen requests, where the benchmark's load makes thousands. Kernel work (system calls,
switching between threads) is not counted. Needs valgrind; takes about five minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
from http.client import HTTPConnection
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402
from instructions import SIGNING_LIBRARY, segment_counts  # noqa: E402

WARM_UP = 40
CONNECTIONS = 2


def drive(target: bench.Target, grant: str, count: int) -> None:
    """``count`` grants from CONNECTIONS keep-alive connections at once; each must be 200."""
    headers = bench.grant_headers(grant, target)
    failures: list[str] = []

    def connection(index: int) -> None:
        conn = HTTPConnection("127.0.0.1", target.port, timeout=600)
        for _ in range(count // CONNECTIONS):
            form = bench.grant_body(grant, target, target.refresh_tokens[index])
            conn.request("POST", target.token_path, form, headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                failures.append(f"{response.status} {body[:300]!r}")
                break
            if grant == "refresh_token":
                target.refresh_tokens[index] = json.loads(body)["refresh_token"]
        conn.close()

    threads = [threading.Thread(target=connection, args=(n,)) for n in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{target.name}: {failures[0]}")


def counted_run(name: str, grant: str, requests: int, workdir: Path) -> tuple[int, int]:
    """(all instructions, instructions in the signing library) of one worker that answered
    the warm-up and ``requests`` more grants."""
    out = workdir / f"{name}-{requests}"
    out.mkdir()
    launcher = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.%p"]
    overrides = {
        # A worker booting under valgrind sends no heartbeat for a while.
        "GUNICORN_CMD_ARGS": "--timeout 900",
        "OAUTH_CLIENT_CACHE_SECONDS": "3600",
        # The same dict order in every run: the two runs differ only by the requests.
        "PYTHONHASHSEED": "0",
    }
    common = (1, CONNECTIONS + 1, "settlement:read", "openid profile")
    if name == "Tokenpass":
        server, target = bench.start_tokenpass(
            workdir, *common, "", launcher=launcher, env_overrides=overrides
        )
    else:
        server, target = bench.start_floor(
            workdir, *common, stateless=True, launcher=launcher, env_overrides=overrides
        )
    try:
        drive(target, grant, WARM_UP + requests)
    finally:
        bench.stop(server)
    total = signing = 0
    for path in out.glob("callgrind.*"):
        all_of_it, in_signing = segment_counts(path)
        total += all_of_it
        signing += in_signing
    return total, signing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--grant", choices=["client_credentials", "refresh_token"], default="client_credentials"
    )
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian's valgrind package)")
    count = max(2 * CONNECTIONS, min(args.requests, 5_000)) // CONNECTIONS * CONNECTIONS
    rows = []
    with tempfile.TemporaryDirectory(prefix="tokenpass-server-instructions-") as tmp:
        for name in ("Tokenpass", "Stateless floor"):
            print(f"{name}: two runs under callgrind ({count} {args.grant} grants) ...", flush=True)
            base_total, base_signing = counted_run(name, args.grant, 0, Path(tmp))
            total, signing = counted_run(name, args.grant, count, Path(tmp))
            rows.append(
                (
                    name,
                    ((total - signing) - (base_total - base_signing)) / count,
                    (signing - base_signing) / count,
                )
            )
    print(
        f"instructions per {args.grant} request in one gunicorn worker, outside RSA signing "
        f"({SIGNING_LIBRARY}), {count} requests:"
    )
    for name, other, signing in rows:
        print(
            f"  {name:<18} {other / 1e6:7.3f} M   (RSA signing, overstated: {signing / 1e6:.3f} M)"
        )
    print(f"  Tokenpass / stateless floor: {rows[0][1] / rows[1][1]:.2f}")


if __name__ == "__main__":
    main()
