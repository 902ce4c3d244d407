"""gunicorn settings for serving Tokenpass: ``gunicorn -c config/gunicorn.py config.wsgi``.

gevent workers serve each client connection in a greenlet of its own: a request's waits for
PostgreSQL, Redis or the broker let another request run, and no connection is handed between
threads. The work is CPU-bound, so the number of processes follows the cores (bench/README.md,
bench/token). Everything here can be overridden on the command line or with GUNICORN_CMD_ARGS;
WEB_CONCURRENCY, GUNICORN_WORKER_CLASS, GUNICORN_WORKER_CONNECTIONS and GUNICORN_THREADS set
the workers.
"""

import multiprocessing
import os

# One process per core and one spare: more processes only add switching between them. On 2
# cores, 3 processes did 15-20 % more token grants and usage records per second than 5
# (bench/README.md).
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() + 1)
# gthread (threads per process) remains available. With gevent, one request's CPU work runs
# to its next wait before another request's does; in the token benchmark gevent's worker ran
# 5-8 % fewer instructions per client credentials grant than gthread's, and 5.6 % more per
# refresh grant, which takes a pooled connection (bench/README.md).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "gevent"
# Client connections each gevent worker serves at once.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS") or 1000)
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
# Database connections come from a pool in each process (DATABASE_POOL_MAX_SIZE in
# config/settings/base.py): a persistent connection per greenlet would open one for every
# client connection. Turned on here, before the workers load the settings, unless the
# environment says otherwise.
os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "10")
# Behind the TLS proxy: idle keep-alive connections are closed after this many seconds.
keepalive = 5
timeout = 30
graceful_timeout = 30
