"""`digitlab serve` and `digitlab feedback`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import DigitlabError
from .common import _err, _nonneg_float, _nonneg_int, _Parser, _positive_float, _positive_int


def cmd_serve(args) -> int:
    import socket

    from ..artifacts import default_model_dir
    from ..predict import Predictor
    from ..server.app import Settings
    from ..server.protocol import serve

    model_dir = Path(args.model_dir) if args.model_dir else default_model_dir()
    # a bad directory is a one-line error here, not a traceback per worker
    predictor = Predictor(model_dir, backend=args.backend, precision=args.precision)
    feedback, feedback_db = _serve_feedback_settings(args)
    with socket.socket() as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise DigitlabError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    if args.log_format == "text":  # json: every line is a JSON object (uvicorn says it too)
        print(f"serving {model_dir} on {predictor.runs} at http://{args.host}:{args.port}/ "
              f"(API docs at /docs), {args.workers} worker(s); Ctrl-C stops", flush=True)
        if feedback_db:
            print(f"storing feedback in {feedback_db}", flush=True)
    settings = Settings(model_dir=str(model_dir), torch_threads=args.threads,
                        workers=args.workers, access_log=args.access_log,
                        backend=args.backend, precision=args.precision, **feedback)
    serve(settings, args.host, args.port, log_level=args.log_level,
          log_format=args.log_format, graceful_timeout=args.graceful_timeout)
    return 0


def _serve_feedback_settings(args) -> tuple[dict, str | None]:
    """The feedback and admin settings of `digitlab serve`, checked, and the database as it is
    shown (no password). The database is created or upgraded here, once, before any worker
    starts."""

    from ..server.admin import ADMIN_TOKEN_ENV, check_token

    token = args.admin_token if args.admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
    out = dict(feedback_db=None, feedback_rate=args.feedback_rate,
               feedback_burst=args.feedback_burst, admin_token=check_token(token))
    if not args.feedback_db:
        return out, None
    from ..feedback import open_store
    from ..feedback.store import shown
    with open_store(args.feedback_db) as store:
        out["feedback_db"] = args.feedback_db
        return out, shown(store.url)


def cmd_feedback(args) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from ..feedback import export_dataset, open_store
    try:
        with open_store(args.db, create=False) as store:
            if args.feedback_command == "stats":
                stats = store.stats()
                if args.json:
                    print(json.dumps(stats.to_dict(), indent=2))
                    return 0
                print(f"{stats.total} stored: {stats.right} right, {stats.wrong} wrong, "
                      f"{stats.rejected} without an answer")
                print(f"{'label':>5} {'total':>7} {'right':>7} {'wrong':>7} {'rejected':>9}")
                for label, c in stats.by_label.items():
                    print(f"{label:>5} {c['total']:>7} {c['right']:>7} {c['wrong']:>7} "
                          f"{c['rejected']:>9}")
                return 0
            if args.feedback_command == "export":
                summary = export_dataset(store, args.out, force=args.force)
                print(f"{summary['images']} images -> {args.out}/<label>/<id>.png"
                      + (f" ({summary['duplicates_skipped']} duplicates skipped)"
                         if summary["duplicates_skipped"] else "")
                      + f"; train with: digitlab train --data-dir {args.out}")
                return 0
            deleted = store.delete(args.ids)
            missing = sorted(set(args.ids) - set(deleted))
            print(f"deleted {len(deleted)} row(s)" + (f": {' '.join(map(str, deleted))}"
                                                      if deleted else ""))
            if missing:
                _err(f"digitlab feedback delete: no feedback with id {' '.join(map(str, missing))}")
                return 1
            return 0
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DigitlabError(f"feedback database: {str(reason).splitlines()[0]}") from None


def register(sub) -> None:
    from ..onnxrt import BACKEND_HELP, BACKENDS, PRECISION_HELP, PREDICT_PRECISIONS

    s = sub.add_parser("serve", help="run the web service and drawing page",
                       description="Serve the JSON API (/api, docs at /docs) and the drawing page "
                                   "(/) with uvicorn. The model is loaded once per worker.")
    s.add_argument("--model-dir", metavar="DIR", help="model directory (default: the shipped model)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1; "
                                                       "0.0.0.0 for every interface)")
    s.add_argument("--port", type=_positive_int, default=8000, help="TCP port (default: 8000)")
    s.add_argument("--workers", type=_positive_int, default=1,
                   help="worker processes, each with its own copy of the model (default: 1)")
    s.add_argument("--threads", type=_positive_int, default=1,
                   help="torch threads per worker (default: 1: requests are single small images)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info",
                                                           "debug"])
    s.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    s.add_argument("--precision", choices=PREDICT_PRECISIONS, default="auto", help=PRECISION_HELP)
    s.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="text (default) or json: one JSON object per line (time, level, message; "
                        "access lines add request_id, method, path, status, duration_ms)")
    s.add_argument("--access-log", action="store_true",
                   help="log every request (with its X-Request-ID and duration)")
    s.add_argument("--graceful-timeout", type=_nonneg_float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, stop accepting connections and give the requests in flight "
                        "this long to finish (default: 10)")
    g = s.add_argument_group("feedback and admin (docs/server.md: Learning from users)")
    g.add_argument("--feedback-db", metavar="PATH|URL",
                   help="store what users say about the answers: an SQLite file (made if "
                        "missing) or a SQLAlchemy URL such as postgresql+psycopg://user@host/db "
                        "(default: nothing is stored)")
    g.add_argument("--feedback-rate", type=_positive_float, default=30.0, metavar="N",
                   help="feedback posts per minute per client address (default 30)")
    g.add_argument("--feedback-burst", type=_positive_int, default=10, metavar="N",
                   help="feedback posts one client may send at once (default 10)")
    g.add_argument("--admin-token", metavar="TOKEN",
                   help="bearer token of the admin endpoints (model reload, deleting feedback); "
                        "default: $DIGITLAB_ADMIN_TOKEN, which other users cannot see in the "
                        "process list; without either they are off")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("feedback", help="the feedback a server stored: stats, export, delete",
                       description="Read and manage a feedback database written by "
                                   "`digitlab serve --feedback-db`. Its schema is upgraded in "
                                   "place if an older digitlab wrote it.")
    fsub = s.add_subparsers(dest="feedback_command", metavar="ACTION", required=True,
                            parser_class=_Parser)
    db_help = "the feedback database: SQLite file or SQLAlchemy URL"
    f = fsub.add_parser("stats", help="counts by label, right and wrong")
    f.add_argument("--db", required=True, metavar="PATH|URL", help=db_help)
    f.add_argument("--json", action="store_true", help="print JSON")
    f = fsub.add_parser("export", help="write DIR/<label>/<id>.png for `digitlab train --data-dir`",
                        description="Write the stored original images as an image-folder "
                                    "dataset DIR/<label>/<id>.png (all ten label folders; an "
                                    "image stored twice with the same label once) and "
                                    "DIR/feedback-export.json.")
    f.add_argument("--db", required=True, metavar="PATH|URL", help=db_help)
    f.add_argument("--out", required=True, metavar="DIR", help="folder to write (new or empty)")
    f.add_argument("--force", action="store_true", help="replace an earlier export in DIR")
    f = fsub.add_parser("delete", help="delete stored images by id (privacy requests)")
    f.add_argument("--db", required=True, metavar="PATH|URL", help=db_help)
    f.add_argument("ids", nargs="+", type=_nonneg_int, metavar="ID", help="row ids (the id "
                   "POST /api/feedback answered)")
    s.set_defaults(func=cmd_feedback)
