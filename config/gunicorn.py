"""gunicorn settings for serving Tokenpass: ``gunicorn -c config/gunicorn.py config.wsgi``.

Threaded workers keep client connections open between requests and overlap one request's
wait for PostgreSQL with another's Python; the work is CPU-bound, so the number of processes
follows the cores (bench/README.md, bench/token). Everything here can be overridden on the
command line or with GUNICORN_CMD_ARGS; WEB_CONCURRENCY and GUNICORN_THREADS set the pool.
"""

import multiprocessing
import os

# One process per core and one spare: the threads of each cover its waits for PostgreSQL, and
# more processes than that only add switching between them. On 2 cores, 3 processes did 15-20 %
# more token grants and usage records per second than 5 (bench/README.md).
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() + 1)
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
# Behind the TLS proxy: idle keep-alive connections are closed after this many seconds.
keepalive = 5
timeout = 30
graceful_timeout = 30
