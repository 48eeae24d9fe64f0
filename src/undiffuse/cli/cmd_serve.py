"""``undiffuse serve``: a local HTTP API and a web page over trained runs (:mod:`undiffuse.serve`)."""

from __future__ import annotations

import argparse

from undiffuse.cli.common import add_device, add_threads, positive_int

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve trained runs on a local HTTP API with a web page",
        description="Load RUN_DIR(s) and serve them: the page at http://HOST:PORT/, the API under /api (GET /api/models, "
        "POST /api/sample, /api/sample/stream, /api/edit, GET /api/health; schema at /openapi.json). Requests with equal "
        "settings share network calls; a full queue answers 429. Needs the serve extra: pip install 'undiffuse[serve]'.",
    )  # fmt: skip
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--max-n", type=positive_int, default=64, help="samples per request at most")
    p.add_argument("--max-steps", type=positive_int, default=250, help="sampler steps per request at most")
    p.add_argument("--queue", type=positive_int, default=32, help="requests waiting at most (beyond: 429)")
    p.add_argument("--max-batch", type=positive_int, default=256, help="rows of one shared network call")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take (beyond: 504)")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from undiffuse.errors import UserError

    try:
        from undiffuse.serve.app import LOOPBACK_HOSTS, create_app
        from undiffuse.serve.catalog import Catalog
        from undiffuse.serve.limits import Limits
        from undiffuse.serve.server import serve
    except ModuleNotFoundError as e:
        raise UserError(f"serve needs {e.name}, which is not installed — pip install 'undiffuse[serve]'") from None
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port — use 0..65535")
    limits = Limits(max_n=args.max_n, max_steps=args.max_steps, queue=args.queue, max_batch=args.max_batch,
                    timeout_s=args.timeout)  # fmt: skip
    catalog = Catalog(args.run_dirs, device=args.device)
    for e in catalog.entries.values():
        print(f"serve: {e.name}: {e.run_dir}" + (f" — NOT LOADED: {e.error}" if e.error else ""), file=sys.stderr)
    if args.host not in LOOPBACK:
        print(f"serve: listening on {args.host}: other machines can reach this server", file=sys.stderr)
    ready = lambda port: print(f"serve: http://{args.host}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)  # noqa: E731
    hosts = LOOPBACK_HOSTS if args.host in LOOPBACK else ("*",)  # loopback: answer loopback Host headers only
    try:
        serve(create_app(catalog, limits, hosts), args.host, args.port, log_level="warning", ready=ready)
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then passed the Ctrl-C on
        pass
    print("serve: stopped", file=sys.stderr)
    return 0
