"""``edgeaigc serve``: the ONNX Runtime model server (Open Inference Protocol, KServe v2 REST).

Serves every ``DIR/<model-name>/model.onnx`` of ``--model-repository DIR`` (optional
``config.yaml`` beside it: see :mod:`edgeaigc.inference.server.repository`). Also runnable as
``python -m edgeaigc.inference.server.cli``.

Exit codes: 0 after a graceful shutdown on SIGTERM, 1 if the server could not start (e.g. the
port is taken), 2 for bad usage (missing repository directory or named model, bad size, TLS files
that cannot be read or do not match, a missing token file), 130 on Ctrl-C.

HTTPS with ``--tls-cert/--tls-key`` (mutual TLS with ``--tls-client-ca``). The repository API
(load/unload) is off unless ``--repository-api``, which needs ``--auth-token-file``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeaigc.inference.http_server import (
    add_body_arguments,
    add_connection_arguments,
    add_log_level_argument,
    add_tls_arguments,
    connection_limits,
    run_app,
    tls_settings,
)
from edgeaigc.inference.metrics_contract import SERVED_BY_VALUES

DEFAULT_PORT = 8080
DEFAULT_MEMORY_BUDGET = "512Mi"
DEFAULT_MAX_REQUEST_BYTES = "16Mi"
DEFAULT_MAX_JSON_BYTES = "4Mi"
DEFAULT_MAX_IN_FLIGHT = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-repository",
        required=True,
        metavar="DIR",
        help="directory with one sub-directory per model holding model.onnx (and optionally config.yaml)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="a model this server exists to serve (repeatable): start fails with exit 2 when DIR/NAME/model.onnx is "
        "missing, and only the named models are served (default: every model of the repository)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--memory-budget",
        default=DEFAULT_MEMORY_BUDGET,
        metavar="SIZE",
        help="memory the loaded models may take together, e.g. 512Mi, 2Gi, or 'unlimited'; loading past it "
        f"evicts the least recently used idle model (default: {DEFAULT_MEMORY_BUDGET})",
    )
    parser.add_argument(
        "--max-request-bytes",
        default=DEFAULT_MAX_REQUEST_BYTES,
        metavar="SIZE",
        help=f"larger request bodies get 413 (default: {DEFAULT_MAX_REQUEST_BYTES})",
    )
    parser.add_argument(
        "--max-json-bytes",
        default=DEFAULT_MAX_JSON_BYTES,
        metavar="SIZE",
        help="larger JSON bodies (or JSON headers of binary ones) get 413, before they are parsed "
        f"(default: {DEFAULT_MAX_JSON_BYTES})",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        metavar="N",
        help="inference requests admitted at once (running or waiting for a worker); past it 503 with "
        f"Retry-After (default: {DEFAULT_MAX_IN_FLIGHT})",
    )
    add_body_arguments(parser)
    add_connection_arguments(parser)
    parser.add_argument(
        "--served-by",
        choices=SERVED_BY_VALUES,
        default="edge",
        help="served_by label of the request metrics: where this server runs (default: edge)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="threads running onnxruntime, shared by all models (default: number of CPUs)",
    )
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="start with no model loaded (load them with POST /v2/repository/models/NAME/load: needs --repository-api)",
    )
    parser.add_argument(
        "--repository-api",
        action="store_true",
        help="answer the repository extension's load and unload (state-changing: needs --auth-token-file) "
        "(default: off, they answer 403)",
    )
    parser.add_argument(
        "--auth-token-file",
        metavar="PATH",
        help="the bearer token (a file, e.g. a mounted Secret key; re-read when it changes) that load and unload "
        "need, and that shows the repository index's details",
    )
    parser.add_argument(
        "--serve-artifacts",
        action="store_true",
        help="hand a loaded model's ONNX file to site neighbours at GET /v2/models/NAME/artifact, for their "
        "`fetch-model --peer` (read-only, only loaded models' own files; default: off, it answers 403)",
    )
    parser.add_argument(
        "--artifact-streams",
        type=int,
        default=2,
        metavar="N",
        help="model files sent at once with --serve-artifacts; more get 503 and fetch elsewhere (default: 2)",
    )
    add_tls_arguments(parser)
    add_log_level_argument(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `edgeaigc --help` stays fast and needs none of the serving packages.
    from edgeaigc.inference.auth import TokenFile
    from edgeaigc.inference.delivery.artifact import MODEL_FILE
    from edgeaigc.inference.server.repository import ModelRepository, parse_byte_size
    from edgeaigc.inference.server.routes import ArtifactAccess, RepositoryAccess, RequestLimits, create_app

    repository_dir = Path(args.model_repository)
    if not repository_dir.is_dir():
        print(f"edgeaigc serve: model repository {repository_dir} is not a directory", file=sys.stderr)
        return 2
    missing = [path for path in (repository_dir / name / MODEL_FILE for name in args.model) if not path.is_file()]
    if missing:
        name = missing[0].parent.name
        print(f"edgeaigc serve: model {name!r} is not in the repository ({missing[0]} is missing)", file=sys.stderr)
        return 2
    try:
        budget = (
            None if str(args.memory_budget).lower() in ("unlimited", "none") else parse_byte_size(args.memory_budget)
        )
        limits = RequestLimits(
            max_request_bytes=parse_byte_size(args.max_request_bytes),
            max_json_bytes=parse_byte_size(args.max_json_bytes),
            body_timeout_s=args.body_timeout,
            body_memory_bytes=parse_byte_size(args.body_memory),
            max_in_flight=args.max_in_flight,
        )
    except ValueError as error:
        print(f"edgeaigc serve: {error}", file=sys.stderr)
        return 2
    connections = connection_limits(args)
    if isinstance(connections, str):
        print(f"edgeaigc serve: {connections}", file=sys.stderr)
        return 2
    if args.max_in_flight < 1 or args.body_timeout <= 0:
        print("edgeaigc serve: --max-in-flight must be at least 1 and --body-timeout positive", file=sys.stderr)
        return 2
    if args.artifact_streams < 1:
        print("edgeaigc serve: --artifact-streams must be at least 1", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print("edgeaigc serve: --workers must be at least 1", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"edgeaigc serve: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2

    tls = tls_settings(args)
    if isinstance(tls, str):
        print(f"edgeaigc serve: {tls}", file=sys.stderr)
        return 2
    if args.repository_api and not args.auth_token_file:
        print(
            "edgeaigc serve: --repository-api lets clients load and unload models: it needs --auth-token-file",
            file=sys.stderr,
        )
        return 2
    try:
        token = TokenFile(Path(args.auth_token_file)) if args.auth_token_file else None
    except (OSError, ValueError) as error:
        print(f"edgeaigc serve: --auth-token-file: {error}", file=sys.stderr)
        return 2

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    repository = ModelRepository(
        repository_dir, memory_budget_bytes=budget, workers=args.workers, only=frozenset(args.model) or None
    )
    app = create_app(
        repository,
        limits=limits,
        served_by=args.served_by,
        preload=not args.no_preload,
        repository_access=RepositoryAccess(enabled=args.repository_api, token=token),
        artifact_access=ArtifactAccess(enabled=args.serve_artifacts, max_streams=args.artifact_streams),
    )
    return run_app(app, args.host, args.port, args.log_level, connections, tls)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeaigc.inference.server.cli``, the same as ``edgeaigc serve``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("serve", argv)


if __name__ == "__main__":
    sys.exit(main())
