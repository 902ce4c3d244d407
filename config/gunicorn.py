"""gunicorn settings for serving Tokenpass: ``gunicorn -c config/gunicorn.py config.wsgi``.

Threaded workers keep client connections open between requests and overlap one request's
wait for PostgreSQL with another's Python; the work is CPU-bound, so the number of processes
follows the cores (bench/README.md, bench/token). Everything here can be overridden on the
command line or with GUNICORN_CMD_ARGS; WEB_CONCURRENCY and GUNICORN_THREADS set the pool.
"""

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * multiprocessing.cpu_count() + 1)
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
# Behind the TLS proxy: idle keep-alive connections are closed after this many seconds.
keepalive = 5
timeout = 30
graceful_timeout = 30
