"""``edgeaigc fetch-model``: put a model's verified ONNX file in place (the inference pod's init container).

Exit codes: 0 the file is in place (downloaded, copied or already there), 1 another failure
(e.g. the destination is not writable), 2 bad usage, 3 checksum mismatch, 4 source unreachable,
5 over the storage budget. On a failure one line saying why goes to stderr and to the
termination log (``/dev/termination-log`` when it exists, where Kubernetes reads a container's
termination message; ``--termination-log`` to choose another file).

``--peer URL`` (repeatable) names a neighbouring edge node's model server that may already hold
the file (``http://SERVICE:PORT/v2/models/NAME/artifact``: peer-to-peer model distribution within
a site). Peers are tried first, once each, with a short timeout; a peer's file must have the
expected ``--sha256`` (peers are only used when one is given), and on any failure or mismatch the
artifact's own source (``--url`` or ``--path``) is used. The last line says which source the file
came from; the exit codes are those of the artifact's source.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edgeaigc.inference.delivery.artifact import (
    ArtifactError,
    FetchResult,
    Progress,
    copy_file,
    fetch_from_peers,
    fetch_url,
    mib,
)
from edgeaigc.inference.delivery.exit_codes import ExitCode

#: Where Kubernetes reads a container's termination message (``terminationMessagePath``'s default).
KUBERNETES_TERMINATION_LOG = Path("/dev/termination-log")
#: Kubernetes keeps at most 4096 bytes of a termination message.
MAX_MESSAGE_BYTES = 4096


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError(f"not a sha256 (64 hexadecimal digits): {text!r}")
    return text.lower()


def _byte_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive number of bytes: {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="download the model from this http(s) URL (needs --sha256)")
    source.add_argument(
        "--path", type=Path, metavar="FILE", help="copy the model from this file (a mounted volume or image)"
    )
    parser.add_argument("--sha256", type=_sha256, metavar="HEX", help="expected sha256 of the file (64 hex digits)")
    parser.add_argument(
        "--dest",
        type=Path,
        required=True,
        metavar="DIR/NAME",
        help="the model's directory in the model repository; the file becomes DIR/NAME/model.onnx",
    )
    parser.add_argument(
        "--max-bytes",
        type=_byte_count,
        required=True,
        metavar="N",
        help="largest file accepted, in bytes: the model's storage budget on the node",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="URL",
        help="a site neighbour's copy of the file, tried before the source, in the order given "
        "(e.g. http://NEIGHBOUR:8080/v2/models/NAME/artifact); repeatable. Used only with --sha256: "
        "a peer's file must match it, and any failure or mismatch falls back to --url/--path",
    )
    parser.add_argument(
        "--peers-file",
        type=Path,
        metavar="FILE",
        help="more peers, one URL a line, tried after the --peer ones (the operator's peers ConfigMap); "
        "a missing file means none",
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="connect and read timeout for each peer, one attempt each (default: 2)",
    )
    parser.add_argument("--attempts", type=int, default=4, help="download attempts in all (default: 4)")
    parser.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wait before the second attempt, doubled for each next one (default: 1)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="connect and read timeout (default: 30)"
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        metavar="PATH",
        help=f"write the reason of a failure here (default: {KUBERNETES_TERMINATION_LOG} when it exists)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


class _ProgressLines:
    """One line on stderr every ``interval_s`` at most (logs of a pod are not a terminal)."""

    def __init__(self, label: str, interval_s: float = 1.0) -> None:
        self.label, self.interval_s, self.last = label, interval_s, 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < self.interval_s and done != total:
            return
        self.last = now
        share = f" ({done / total:.0%})" if total else ""
        of = f" of {mib(total)}" if total is not None else ""
        print(f"fetch-model: {self.label}: {mib(done)}{of}{share}", file=sys.stderr, flush=True)


def _report_failure(message: str, termination_log: Path | None) -> None:
    line = " ".join(message.split())
    print(f"edgeaigc fetch-model: {line}", file=sys.stderr, flush=True)
    target = termination_log
    if target is None and KUBERNETES_TERMINATION_LOG.exists():
        target = KUBERNETES_TERMINATION_LOG
    if target is not None:
        try:
            target.write_bytes(line.encode()[:MAX_MESSAGE_BYTES])
        except OSError as error:
            print(f"edgeaigc fetch-model: cannot write {target}: {error}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.url is not None and args.sha256 is None:
        _report_failure("--sha256 is required with --url", args.termination_log)
        return ExitCode.USAGE
    if args.attempts < 1:
        _report_failure("--attempts must be at least 1", args.termination_log)
        return ExitCode.USAGE
    peers = list(args.peer)
    if args.peers_file is not None:
        try:
            peers += [line.strip() for line in args.peers_file.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            pass  # no neighbour of this node's site holds the model: the source it is
        except (OSError, UnicodeDecodeError) as error:
            print(f"fetch-model: --peers-file {args.peers_file} unreadable ({error}): no peers", file=sys.stderr)
    if peers and args.sha256 is None:
        _report_failure(
            "--peer needs --sha256: a peer's file is used only when its checksum matches", args.termination_log
        )
        return ExitCode.USAGE
    if args.peer_timeout <= 0:
        _report_failure("--peer-timeout must be positive", args.termination_log)
        return ExitCode.USAGE
    source = args.url or str(args.path)
    progress: Progress | None = None if args.quiet else _ProgressLines(source)

    def log(line: str) -> None:
        print(f"fetch-model: {line}", file=sys.stderr, flush=True)

    try:
        result: FetchResult
        from_peer = None
        if peers:
            from_peer = fetch_from_peers(
                peers,
                args.dest,
                sha256=args.sha256,
                max_bytes=args.max_bytes,
                timeout_s=args.peer_timeout,
                progress=progress,
                log=log,
            )
        if from_peer is not None:
            result, source = from_peer
        elif args.url is not None:
            result = fetch_url(
                args.url,
                args.dest,
                sha256=args.sha256,
                max_bytes=args.max_bytes,
                attempts=args.attempts,
                backoff_s=args.backoff,
                timeout_s=args.timeout,
                progress=progress,
                log=log,
            )
        else:
            result = copy_file(args.path, args.dest, sha256=args.sha256, max_bytes=args.max_bytes, progress=progress)
    except ArtifactError as error:
        _report_failure(str(error), args.termination_log)
        return error.exit_code
    except OSError as error:
        _report_failure(f"{source}: {error}", args.termination_log)
        return ExitCode.FAILED
    # Says where the file came from: a peer on the site's LAN, or the artifact's source (the backhaul).
    where = "peer" if from_peer is not None else "source"
    what = "kept (checksum verified)" if result.kept else f"fetched from {where} {source}"
    print(f"fetch-model: {result.path} {what}: {mib(result.size)}, sha256 {result.sha256}", file=sys.stderr)
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeaigc.inference.delivery.cli``, the same as ``edgeaigc fetch-model``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("fetch-model", argv)


if __name__ == "__main__":
    sys.exit(main())
