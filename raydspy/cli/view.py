"""``raydspy view OUTPUT``: the rollout viewer over an output folder (local, ``s3://``, ``gs://``),
without the service. The same pages as the service's ``/viewer`` (`raydspy.viewer`).

On the loopback interface (the default) the viewer is open to this machine's users; with
``$RAYDSPY_VIEW_TOKEN`` set, or on any other interface (a token is then made up and printed),
pages need the token, given once in the login form, as in the service.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket

from raydspy.cli import common

__all__ = ["add_view_command", "run_view", "DEFAULT_PORT"]

#: The first port tried: beside Ray's dashboard (8265), the next free one is taken.
DEFAULT_PORT = 8266
TOKEN_ENV = "RAYDSPY_VIEW_TOKEN"


def add_view_command(sub: argparse._SubParsersAction) -> None:
    """Add ``view`` to the ``raydspy`` sub-command parser ``sub``."""
    view = sub.add_parser(
        "view",
        help="browse an output's rollouts in a web page: filters, traces, reward histogram",
        description="Serve the rollout viewer over OUTPUT (one run's output, or a folder whose "
        "sub-folders are outputs): rollouts filtered by reward, error type and example, each "
        "rollout's trace call by call, the reward histogram and the errors by type. "
        f"Set ${TOKEN_ENV} to require a token (login form).",
    )
    view.add_argument("output", help="folder or prefix of rollouts (local, s3://, gs://)")
    view.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    view.add_argument("--port", type=int, default=None, help=f"port (default: the first free one from {DEFAULT_PORT})")
    view.add_argument(
        "--s3-endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="endpoint of an S3-compatible store (default: $AWS_ENDPOINT_URL)",
    )


def free_port(host: str, start: int = DEFAULT_PORT, tries: int = 50) -> int:
    """The first port from ``start`` that ``host`` can bind.

    Raises:
        ConfigError: none of ``tries`` ports is free.
    """
    from raydspy.errors import ConfigError

    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise ConfigError(f"no free port on {host} in {start}-{start + tries - 1}: give one with --port")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_view(args: argparse.Namespace) -> int:
    import uvicorn

    from raydspy.core.storage import StorageOptions
    from raydspy.viewer.app import create_viewer_app

    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not _loopback(args.host):
        token = secrets.token_urlsafe(24)
        common.console.print(f"listening beyond this machine: sign in with the token [bold]{token}[/]")
    app = create_viewer_app(args.output, StorageOptions(s3_endpoint_url=args.s3_endpoint), token)
    port = args.port or free_port(args.host)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    common.console.print(f"viewer of {args.output}: http://{shown}:{port}/viewer/  (Ctrl-C to stop)")
    uvicorn.run(app, host=args.host, port=port, log_level="warning")
    return 0
