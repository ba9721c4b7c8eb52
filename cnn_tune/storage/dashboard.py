"""`cnn-tune dashboard`: optuna-dashboard on the same storage, for a live view in a browser.

optuna-dashboard is an optional extra (``pip install -e '.[dashboard]'``). The server reads
through the storage opened here (SQLite in WAL mode: readers never block the workers' writes)
and serves until Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.artifacts import FileSystemArtifactStore

from cnn_tune.errors import DependencyMissing, UsageError
from cnn_tune.storage.artifacts import artifact_folder
from cnn_tune.storage.engine import open_existing


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection never keeps Ctrl-C waiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass  # no access log on the terminal; the URL line is what matters


def serve(url: str, host: str, port: int, ready: Callable[[str], None], artifacts: Path | None = None) -> None:
    """Serve until KeyboardInterrupt; ``ready`` gets the address once the port is bound. The
    study's artifact store (``artifacts``, else the one beside a SQLite database) is served too,
    so a study's page lists its final models."""
    try:
        import optuna_dashboard
    except ImportError:
        raise DependencyMissing(
            "the dashboard needs the optuna-dashboard package",
            hint="pip install -e '.[dashboard]'  (or: pip install optuna-dashboard)",
        ) from None
    storage = open_existing(url)
    folder = artifact_folder(url, artifacts)
    store = FileSystemArtifactStore(str(folder)) if folder is not None and folder.is_dir() else None
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pass another --port, or --port 0 for any free one",
        ) from None
    with server:
        shown_host = f"[{host}]" if ":" in host else host
        ready(f"http://{shown_host}:{server.server_address[1]}/dashboard/")
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
