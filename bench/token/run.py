"""Token-endpoint grants per second: Tokenpass (Django + django-oauth-toolkit under gunicorn)
beside panva's oidc-provider (Node.js), both on this machine's PostgreSQL.

    .venv/bin/python bench/token/run.py [--seconds 5] [--rounds 3] [--clients 8]
                                        [--only tokenpass floor stateless-floor django-floor node]
                                        [--node-token-format jwt|opaque]

A third server, the Python floor (bench/token/floor.py), is a bare WSGI token endpoint under
the same gunicorn settings that does only the work every Tokenpass grant must do (client
lookup and keyed-hash check, RS256 signing, the token rows): it shows how much of the distance
to oidc-provider belongs to Python and gunicorn, and how much to Django, DOT and oauthlib. A
fourth, the Django floor (bench/token/django_floor.py), is Tokenpass's own Django stack whose
token endpoint answers a fixed response without doing a grant: what a request costs in Django
under gunicorn before any work. A fifth, the stateless floor (floor.py with FLOOR_STATELESS),
does for client credentials exactly what oidc-provider does here and no more (the client kept
in memory after one read, the access token not stored): whether any Python server under
gunicorn could match oidc-provider given the same work.

Two grants are measured on each server: client credentials (a partner's server asks for a
token for itself) and refresh token (an app renews a user's token; the refresh token rotates
on every use, so each load-generator client follows its own chain). Every request
authenticates the client with HTTP Basic and must answer 200 with an access token; anything
else counts as an error and invalidates the figures. The servers run side by side and are
measured in alternating rounds, so that other load on the machine weighs on both alike.

Both servers run production-like: Tokenpass with config.settings.production (DEBUG off,
persistent database connections) in database ``tokenpass_bench``; oidc-provider in
``tokenpass_bench_node`` with a PostgreSQL adapter (bench/token/node/server.js). The load
generator runs on the same cores, and so does PostgreSQL, so the per-core figures are
conservative; the figures per CPU-second of the application server leave both out.

Only 127.0.0.1 is contacted, every loop is bounded in time and in count, and `npm ci` is the
only step that reaches a registry (npm's, for the lock-filed packages).
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    PG_URL,
    ROOT,
    free_port,
    production_env,
    recreate_database,
    start_gunicorn,
    stop,
    tree_cpu_seconds,
    wait_for_http,
)

NODE_DIR = Path(__file__).resolve().parent / "node"
DB_NAME = "tokenpass_bench"
NODE_DB_NAME = "tokenpass_bench_node"
FLOOR_DB_NAME = "tokenpass_bench_floor"
STATELESS_FLOOR_DB_NAME = "tokenpass_bench_floor_stateless"
CLIENT_SECRET = "bench-client-secret-7Qm2xV9pL4"
# Keycloak's sizing guide budgets one vCPU for every 120 client-credentials grants per second.
KEYCLOAK_CC_PER_VCPU = 120.0
MAX_REQUESTS_PER_CLIENT = 200_000
# Until a started server must answer; ten times longer under a launcher (valgrind's callgrind
# runs a worker tens of times slower).
BOOT_TIMEOUT = 60.0

# Run inside `manage.py shell` against the bench database: one partner, a confidential
# client-credentials app, a confidential web app, and one refresh-token chain per client.
SEED_SCRIPT = """
import json, secrets, uuid
from datetime import timedelta
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from accounts.models import User
from partners.models import Application, Partner

chains, secret, out, cc_scope, refresh_scope = {chains}, {secret!r}, {out!r}, {cc_scope!r}, {refresh_scope!r}
partner = Partner.objects.create(name="Bench partner", status=Partner.Status.ACTIVE)
common = dict(partner=partner, client_type=Application.CLIENT_CONFIDENTIAL, client_secret=secret,
              hash_client_secret=True, algorithm=Application.RS256_ALGORITHM)
cc = Application.objects.create(
    name="Bench service", authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    allowed_grant_types=Application.GRANT_CLIENT_CREDENTIALS, allowed_scopes=cc_scope, **common)
web = Application.objects.create(
    name="Bench web app", authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
    redirect_uris="https://partner.example/callback",
    allowed_grant_types=f"{{Application.GRANT_AUTHORIZATION_CODE}} refresh_token",
    allowed_scopes=refresh_scope, **common)
AccessToken, RefreshToken = get_access_token_model(), get_refresh_token_model()
tokens = []
for i in range(chains):
    user = User.objects.create_user(phone=f"+8613700{{i:06d}}", password=None)
    access = AccessToken.objects.create(
        user=user, application=web, token=secrets.token_urlsafe(32), scope=refresh_scope,
        expires=timezone.now() + timedelta(hours=1))
    # As the authorization-code grant leaves them: a new token family per sign-in.
    refresh = RefreshToken.objects.create(
        user=user, application=web, token=secrets.token_urlsafe(32), access_token=access,
        token_family=uuid.uuid4())
    tokens.append(refresh.token)
with open(out, "w") as handle:
    json.dump({{"cc_client_id": cc.client_id, "web_client_id": web.client_id,
               "refresh_tokens": tokens}}, handle)
"""


@dataclass
class Target:
    """One server under test: where its token endpoint is and what to send it."""

    name: str
    port: int
    token_path: str
    cc_client_id: str
    web_client_id: str
    secret: str
    cc_scope: str
    refresh_tokens: list[str]
    root_pid: int


@dataclass
class Result:
    ok: int
    errors: int
    elapsed: float
    latencies: list[float]
    server_cpu_seconds: float
    first_error: str
    sample_keys: list[str]
    # Grants per second, and per app-server CPU-second, of each round: the spread, and the
    # ratios of rounds measured one after the other (round_ratios).
    rounds: list[float]
    rounds_per_cpu: list[float] = field(default_factory=list)

    @property
    def grants_per_second(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def grants_per_cpu_second(self) -> float:
        return self.ok / self.server_cpu_seconds if self.server_cpu_seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def __add__(self, other: Result) -> Result:
        return Result(
            ok=self.ok + other.ok,
            errors=self.errors + other.errors,
            elapsed=self.elapsed + other.elapsed,
            latencies=self.latencies + other.latencies,
            server_cpu_seconds=self.server_cpu_seconds + other.server_cpu_seconds,
            first_error=self.first_error or other.first_error,
            sample_keys=self.sample_keys or other.sample_keys,
            rounds=self.rounds + other.rounds,
            rounds_per_cpu=self.rounds_per_cpu + other.rounds_per_cpu,
        )


BENCH_LOCK_KEY = 0x746F6B656E  # one token benchmark at a time on a PostgreSQL server


def hold_bench_lock(timeout: float = 900.0):
    """A session advisory lock, so that two runs on one machine do not drop each other's
    databases; waits (bounded) for a run already in progress. Released when the returned
    connection closes."""
    import psycopg

    conn = psycopg.connect(f"{PG_URL}/postgres", autocommit=True)
    deadline = time.monotonic() + timeout
    announced = False
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (BENCH_LOCK_KEY,)).fetchone()[0]:
        if time.monotonic() > deadline:
            conn.close()
            raise RuntimeError("another token benchmark run held the lock for too long")
        if not announced:
            print("waiting for another token benchmark run to finish ...", flush=True)
            announced = True
        time.sleep(1)
    return conn


def discover_token_path(port: int, candidates: list[str]) -> str:
    """The token endpoint's path, read from the server's OpenID discovery document."""
    for path in candidates:
        conn = HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path, headers={"Host": "127.0.0.1", "X-Forwarded-Proto": "https"})
        response = conn.getresponse()
        body = response.read()
        if response.status == 200:
            return urllib.parse.urlsplit(json.loads(body)["token_endpoint"]).path
    raise RuntimeError(f"no discovery document at any of {candidates} on port {port}")


# -- load generator (one process per client) -------------------------------------------------


def grant_headers(kind: str, target: Target) -> dict[str, str]:
    """The headers of every ``kind`` grant sent to ``target``: its client's HTTP Basic
    credentials, form-encoded first (RFC 6749 §2.3.1)."""
    client_id = target.cc_client_id if kind == "client_credentials" else target.web_client_id
    basic = base64.b64encode(
        f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(target.secret)}".encode()
    ).decode()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": f"Basic {basic}",
        "Accept": "application/json",
        "Host": "127.0.0.1",
        # As a TLS-terminating proxy in front of the server would say.
        "X-Forwarded-Proto": "https",
    }


def grant_body(kind: str, target: Target, refresh_token: str) -> str:
    """The form of one ``kind`` grant; a refresh presents ``refresh_token``."""
    if kind == "client_credentials":
        form = {"grant_type": "client_credentials"}
        if target.cc_scope:
            form["scope"] = target.cc_scope
    else:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return urllib.parse.urlencode(form)


def _client(
    kind: str,
    target: Target,
    index: int,
    start_at: float,
    stop_at: float,
    queue: mp.Queue,
) -> None:
    headers = grant_headers(kind, target)
    refresh_token = target.refresh_tokens[index] if kind == "refresh_token" else ""
    conn = HTTPConnection("127.0.0.1", target.port, timeout=30)
    ok = errors = 0
    latencies: list[float] = []
    first_error = ""
    sample_keys: list[str] = []
    while time.monotonic() < start_at:
        time.sleep(0.001)
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        began = time.monotonic()
        if began >= stop_at:
            break
        try:
            conn.request(
                "POST", target.token_path, grant_body(kind, target, refresh_token), headers
            )
            response = conn.getresponse()
            body = response.read()
            if response.will_close:
                conn.close()
        except OSError as exc:
            conn.close()
            errors += 1
            first_error = first_error or repr(exc)
            continue
        finished = time.monotonic()
        data = json.loads(body) if body.startswith(b"{") else {}
        if response.status == 200 and "access_token" in data:
            ok += 1
            latencies.append(finished - began)
            sample_keys = sample_keys or sorted(data)
            if kind == "refresh_token":
                refresh_token = data["refresh_token"]
        else:
            errors += 1
            first_error = first_error or f"{response.status} {body[:300]!r}"
            if kind == "refresh_token":
                break  # the chain is broken; carrying on would only count more errors
    conn.close()
    queue.put((ok, errors, latencies, first_error, sample_keys, index, refresh_token))


def measure(kind: str, target: Target, seconds: float, clients: int) -> Result:
    queue: mp.Queue = mp.Queue()
    start_at = time.monotonic() + 1.0
    stop_at = start_at + seconds
    procs = [
        mp.Process(target=_client, args=(kind, target, n, start_at, stop_at, queue))
        for n in range(clients)
    ]
    for p in procs:
        p.start()
    while time.monotonic() < start_at:
        time.sleep(0.001)
    cpu_before = tree_cpu_seconds(target.root_pid)
    parts = [queue.get(timeout=seconds + 120) for _ in procs]
    elapsed = time.monotonic() - start_at
    cpu_after = tree_cpu_seconds(target.root_pid)
    for p in procs:
        p.join()
    if kind == "refresh_token":
        # The next round carries on each chain from the token it ended with.
        for part in parts:
            target.refresh_tokens[part[5]] = part[6]
    ok = sum(p[0] for p in parts)
    return Result(
        ok=ok,
        errors=sum(p[1] for p in parts),
        elapsed=elapsed,
        latencies=[x for p in parts for x in p[2]],
        server_cpu_seconds=cpu_after - cpu_before,
        first_error=next((p[3] for p in parts if p[3]), ""),
        sample_keys=next((p[4] for p in parts if p[4]), []),
        rounds=[ok / elapsed],
        rounds_per_cpu=[ok / (cpu_after - cpu_before) if cpu_after > cpu_before else 0.0],
    )


def warm_up(target: Target, seconds: float) -> None:
    """Every worker imports its code and opens its database connection before the clock."""
    spare = Target(**{**target.__dict__, "refresh_tokens": target.refresh_tokens[-1:]})
    measure("client_credentials", spare, seconds, 2)
    measure("refresh_token", spare, seconds, 1)


# -- the two servers ---------------------------------------------------------------------------


def tokenpass_env(keys_file: Path) -> dict[str, str]:
    return production_env(
        database=DB_NAME,
        DJANGO_SETTINGS_MODULE=os.environ.get(
            "BENCH_DJANGO_SETTINGS_MODULE", "config.settings.production"
        ),
        OIDC_PRIVATE_KEYS_FILE=str(keys_file),
    )


def start_tokenpass(
    workdir: Path,
    workers: int,
    chains: int,
    cc_scope: str,
    refresh_scope: str,
    token_path: str,
    *,
    launcher: Sequence[str] = (),
    env_overrides: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, Target]:
    env = {**tokenpass_env(workdir / "oidc-keys.json"), **(env_overrides or {})}
    python = sys.executable
    print(f"preparing database {DB_NAME} ...", flush=True)
    recreate_database(DB_NAME)
    quiet = {"cwd": ROOT, "env": env, "check": True, "stdout": subprocess.DEVNULL}
    subprocess.run([python, "manage.py", "migrate", "--noinput", "--skip-checks"], **quiet)  # type: ignore[call-overload]
    if not (workdir / "oidc-keys.json").exists():
        # Before serving, as a deployment does, rather than in the first grant.
        subprocess.run([python, "manage.py", "oidc_rotate_keys", "--init"], **quiet)  # type: ignore[call-overload]
    seed_file = workdir / "tokenpass-seed.json"
    script = SEED_SCRIPT.format(
        chains=chains,
        secret=CLIENT_SECRET,
        out=str(seed_file),
        cc_scope=cc_scope,
        refresh_scope=refresh_scope,
    )
    subprocess.run([python, "manage.py", "shell", "-c", script], **quiet)  # type: ignore[call-overload]
    seed = json.loads(seed_file.read_text())
    port = free_port()
    server = start_gunicorn(
        "config.wsgi:application", port=port, workers=workers, env=env, launcher=launcher
    )
    wait_for_http(port, "/healthz", timeout=BOOT_TIMEOUT * (10 if launcher else 1))
    token_path = token_path or discover_token_path(
        port, ["/.well-known/openid-configuration", "/o/.well-known/openid-configuration"]
    )
    return server, Target(
        name="Tokenpass",
        port=port,
        token_path=token_path,
        cc_client_id=seed["cc_client_id"],
        web_client_id=seed["web_client_id"],
        secret=CLIENT_SECRET,
        cc_scope=cc_scope,
        refresh_tokens=seed["refresh_tokens"],
        root_pid=server.pid,
    )


def start_floor(
    workdir: Path,
    workers: int,
    chains: int,
    cc_scope: str,
    refresh_scope: str,
    *,
    stateless: bool = False,
    launcher: Sequence[str] = (),
    env_overrides: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, Target]:
    """The bare WSGI floor (floor.py) under the same gunicorn settings as Tokenpass; with
    ``stateless``, doing for client credentials only what oidc-provider does (FLOOR_STATELESS)."""
    import floor

    database = STATELESS_FLOOR_DB_NAME if stateless else FLOOR_DB_NAME
    recreate_database(database)
    dsn = f"{PG_URL}/{database}"
    client_id = "floor-client"
    tokens = floor.seed(
        dsn=dsn,
        client_id=client_id,
        secret=CLIENT_SECRET,
        scope=f"{cc_scope} {refresh_scope}",
        chains=chains,
    )
    port = free_port()
    env = dict(
        os.environ,
        FLOOR_DATABASE_URL=dsn,
        FLOOR_STATELESS="1" if stateless else "0",
        **(env_overrides or {}),
    )
    server = start_gunicorn(
        "floor:application",
        port=port,
        workers=workers,
        env=env,
        python_path=Path(__file__).resolve().parent,
        launcher=launcher,
    )
    wait_for_http(port, "/", timeout=BOOT_TIMEOUT * (10 if launcher else 1))
    return server, Target(
        name="Stateless floor" if stateless else "Python floor",
        port=port,
        token_path="/token",
        cc_client_id=client_id,
        web_client_id=client_id,
        secret=CLIENT_SECRET,
        cc_scope=cc_scope,
        refresh_tokens=tokens,
        root_pid=server.pid,
    )


def start_django_floor(
    workdir: Path, workers: int, chains: int, cc_scope: str
) -> tuple[subprocess.Popen, Target]:
    """Tokenpass's Django stack answering a fixed token response (django_floor.py)."""
    env = tokenpass_env(workdir / "oidc-keys-django-floor.json")
    port = free_port()
    server = start_gunicorn(
        "django_floor:application",
        port=port,
        workers=workers,
        env=env,
        python_path=Path(__file__).resolve().parent,
    )
    wait_for_http(port, "/healthz")
    return server, Target(
        name="Django floor",
        port=port,
        token_path="/o/token/",
        cc_client_id="django-floor",
        web_client_id="django-floor",
        secret=CLIENT_SECRET,
        cc_scope=cc_scope,
        refresh_tokens=["r" * 43] * chains,
        root_pid=server.pid,
    )


def start_node(
    workdir: Path, workers: int, chains: int, cc_scope: str, refresh_scope: str, token_format: str
) -> tuple[subprocess.Popen, Target]:
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise RuntimeError("node and npm are needed for the oidc-provider figures")
    print("npm ci (oidc-provider) ...", flush=True)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    recreate_database(NODE_DB_NAME)
    port = free_port()
    seed_file = workdir / "node-seed.json"
    env = dict(os.environ)
    env.update(
        {
            "PORT": str(port),
            "WORKERS": str(workers),
            "DATABASE_URL": f"{PG_URL}/{NODE_DB_NAME}",
            "CLIENT_ID": "bench-client",
            "CLIENT_SECRET": CLIENT_SECRET,
            "CHAINS": str(chains),
            "SEED_OUT": str(seed_file),
            "ACCESS_TOKEN_FORMAT": token_format,
            "REFRESH_SCOPE": refresh_scope,
            "CC_SCOPE": cc_scope,
            "NODE_ENV": "production",
        }
    )
    server = subprocess.Popen([node, "server.js"], cwd=NODE_DIR, env=env, stderr=subprocess.DEVNULL)
    wait_for_http(port, "/.well-known/openid-configuration")
    deadline = time.monotonic() + 60
    while not seed_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    seed = json.loads(seed_file.read_text())
    return server, Target(
        name="oidc-provider",
        port=port,
        token_path=discover_token_path(port, ["/.well-known/openid-configuration"]),
        cc_client_id="bench-client",
        web_client_id="bench-client",
        secret=CLIENT_SECRET,
        cc_scope=cc_scope,
        refresh_tokens=seed["refresh_tokens"],
        root_pid=server.pid,
    )


def bench_all(starters: dict, args: argparse.Namespace) -> dict[str, dict[str, Result]]:
    """Start every server, then measure them in alternating rounds, so that whatever else the
    machine is doing weighs on each server alike."""
    running: list[tuple[subprocess.Popen, Target]] = []
    try:
        for name, start in starters.items():
            print(f"starting {name} ...", flush=True)
            running.append(start())
        for _, target in running:
            warm_up(target, args.warmup)
        results: dict[str, dict[str, Result]] = {t.name: {} for _, t in running}
        for round_number in range(1, args.rounds + 1):
            for kind in ("client_credentials", "refresh_token"):
                for _, target in running:
                    print(
                        f"  round {round_number}/{args.rounds} {target.name}: {kind} "
                        f"({args.clients} clients, {args.seconds:g} s) ...",
                        flush=True,
                    )
                    result = measure(kind, target, args.seconds, args.clients)
                    previous = results[target.name].get(kind)
                    results[target.name][kind] = previous + result if previous else result
        return results
    finally:
        for server, _ in running:
            stop(server)


# Ratios printed when both servers ran: Tokenpass against the node peer, the Python floor
# against the node peer (what any Python server under gunicorn could reach), and Tokenpass
# against the floor (what the framework and the libraries cost).
RATIO_PAIRS = (
    ("Tokenpass", "oidc-provider"),
    ("Python floor", "oidc-provider"),
    ("Stateless floor", "oidc-provider"),
    ("Django floor", "oidc-provider"),
    ("Tokenpass", "Python floor"),
    ("Tokenpass", "Django floor"),
)
GRANTS = (("client_credentials", "client credentials"), ("refresh_token", "refresh token"))


def round_ratios(ours: list[float], theirs: list[float]) -> str:
    """The median of the round-by-round ratios, with the lowest and highest: one slow round
    (the machine busy with something else) moves it less than it moves the totals."""
    ratios = [a / b for a, b in zip(ours, theirs, strict=False) if b]
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def report(results: dict[str, dict[str, Result]], args: argparse.Namespace) -> bool:
    cores = os.cpu_count() or 1
    names = list(results)
    print()
    print(
        f"cores {cores}; {args.clients} load-generator clients on the same cores; "
        f"{args.rounds} alternating rounds of {args.seconds:g} s per figure"
    )
    # Anything else running on the machine lowers every figure; say how busy it was.
    print(f"load average (1 min) before {args.load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    print(
        f"gunicorn workers {args.workers} (config/gunicorn.py, for Tokenpass and the floor); "
        f"node workers {args.node_workers}; oidc-provider access tokens: {args.node_token_format}"
    )
    print(f"{'':34}" + "".join(f"{n:>16}" for n in names))
    valid = True
    for kind, label in GRANTS:
        rows = [
            (f"{label} grants/s", lambda r: f"{r.grants_per_second:16.1f}"),
            ("  per core", lambda r: f"{r.grants_per_second / cores:16.1f}"),
            ("  per app-server CPU-second", lambda r: f"{r.grants_per_cpu_second:16.1f}"),
            (
                "  latency p50 / p99 ms",
                lambda r: f"{r.percentile_ms(0.5):7.1f} /{r.percentile_ms(0.99):7.1f}",
            ),
            (
                "  rounds min / max grants/s",
                lambda r: f"{min(r.rounds):7.1f} /{max(r.rounds):7.1f}",
            ),
            ("  failed requests", lambda r: f"{r.errors:16d}"),
        ]
        for title, fmt in rows:
            print(f"{title:34}" + "".join(fmt(results[n][kind]) for n in names))
        for n in names:
            r = results[n][kind]
            if r.errors or not r.ok:
                valid = False
                print(f"  {n} {kind} first error: {r.first_error}")
    pairs = [(a, b) for a, b in RATIO_PAIRS if a in results and b in results]
    if pairs:
        print()
        print(f"{'ratios':34}{'grants/s':>16}{'per CPU-second':>16}")
        for kind, label in GRANTS:
            for a, b in pairs:
                ra, rb = results[a][kind], results[b][kind]
                per_second = ra.grants_per_second / rb.grants_per_second if rb.ok else 0.0
                per_cpu = (
                    ra.grants_per_cpu_second / rb.grants_per_cpu_second
                    if rb.grants_per_cpu_second
                    else 0.0
                )
                title = f"{label}: {a} / {b}"
                print(f"{title:50}{per_second:8.2f}{per_cpu:16.2f}")
        print()
        print(
            "the same ratios round by round (each pair measured one after the other, so what "
            "else the machine was doing weighs on both): median, lowest-highest"
        )
        for kind, label in GRANTS:
            for a, b in pairs:
                ra, rb = results[a][kind], results[b][kind]
                title = f"{label}: {a} / {b}"
                print(
                    f"{title:50}{round_ratios(ra.rounds, rb.rounds):>20}"
                    f"{round_ratios(ra.rounds_per_cpu, rb.rounds_per_cpu):>20}"
                )
    print()
    print(
        f"Keycloak sizing budget: {KEYCLOAK_CC_PER_VCPU:.0f} client-credentials grants/s per vCPU"
    )
    for n in names:
        r = results[n]["client_credentials"]
        per_core = r.grants_per_second / cores
        print(
            f"  {n:14} {per_core:7.1f}/s per core ({per_core / KEYCLOAK_CC_PER_VCPU:4.2f}x), "
            f"{r.grants_per_cpu_second:7.1f}/s per app-server CPU-second "
            f"({r.grants_per_cpu_second / KEYCLOAK_CC_PER_VCPU:4.2f}x)"
        )
    for n in names:
        print(f"  {n} refresh response fields: {' '.join(results[n]['refresh_token'].sample_keys)}")
    return valid


def main() -> None:
    cores = os.cpu_count() or 2
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=cores + 1, help="gunicorn workers")
    parser.add_argument("--node-workers", type=int, default=cores)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["tokenpass", "floor", "stateless-floor", "django-floor", "node"],
        help="run only these servers (default: all five)",
    )
    parser.add_argument(
        "--token-path", default="", help="Tokenpass token endpoint (default: from discovery)"
    )
    parser.add_argument("--cc-scope", default="settlement:read")
    parser.add_argument("--refresh-scope", default="openid profile")
    parser.add_argument(
        "--node-token-format",
        choices=["opaque", "jwt"],
        default="jwt",
        help="oidc-provider access token format (Tokenpass issues RFC 9068 JWTs)",
    )
    args = parser.parse_args()
    args.seconds = min(args.seconds, 60.0)
    args.rounds = max(1, min(args.rounds, 10))
    args.clients = max(1, min(args.clients, 64))
    chains = args.clients + 1  # one per client, and one for the warm-up

    lock = hold_bench_lock()
    args.load_before = os.getloadavg()[0]
    with lock, tempfile.TemporaryDirectory(prefix="tokenpass-bench-") as tmp:
        workdir = Path(tmp)
        starters = {}
        only = set(args.only or ["tokenpass", "floor", "stateless-floor", "django-floor", "node"])
        if "tokenpass" in only:
            starters[f"Tokenpass under gunicorn ({args.workers} workers)"] = lambda: (
                start_tokenpass(
                    workdir,
                    args.workers,
                    chains,
                    args.cc_scope,
                    args.refresh_scope,
                    args.token_path,
                )
            )
        if "floor" in only:
            starters[f"Python floor under gunicorn ({args.workers} workers)"] = lambda: start_floor(
                workdir, args.workers, chains, args.cc_scope, args.refresh_scope
            )
        if "stateless-floor" in only:
            starters[f"Stateless floor under gunicorn ({args.workers} workers)"] = lambda: (
                start_floor(
                    workdir, args.workers, chains, args.cc_scope, args.refresh_scope, stateless=True
                )
            )
        if "django-floor" in only:
            starters[f"Django floor under gunicorn ({args.workers} workers)"] = lambda: (
                start_django_floor(workdir, args.workers, chains, args.cc_scope)
            )
        if "node" in only:
            starters[f"oidc-provider under node ({args.node_workers} workers)"] = lambda: (
                start_node(
                    workdir,
                    args.node_workers,
                    chains,
                    args.cc_scope,
                    args.refresh_scope + " offline_access",
                    args.node_token_format,
                )
            )
        results = bench_all(starters, args)
    if not report(results, args):
        sys.exit("some grants failed: the figures are not valid")


if __name__ == "__main__":
    main()
