"""``attentionflow app``: the command handler and parser (the page and the session live in
:mod:`attentionflow.commands.webapp`)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from attentionflow.commands import webapp as web
from attentionflow.commands.webapp import AppSettings
from attentionflow.config import MAX_TARGETS
from attentionflow.errors import ConfigError

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: ``localhost`` (any case), 127.0.0.0/8 (``127.1`` too) and
    ``::1``, decided by :mod:`ipaddress`."""
    import ipaddress
    import socket

    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        try:  # the classic short forms (127.1) that inet_aton accepts
            return ipaddress.IPv4Address(socket.inet_aton(name)).is_loopback
        except OSError:
            return False


def _check_port_free(host: str, port: int) -> None:
    """One line now, instead of gradio's traceback later, when ``port`` cannot be bound on ``host``."""
    import socket

    name = host.strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((name, port))
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host} port {port}: {exc.strerror or exc}; choose another --port "
                          f"(or --host)") from None


def parse_auth(text: str) -> tuple[str, str]:
    """``USER:PASS`` -> (user, password); both must be non-empty."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"--auth must be USER:PASS with both parts non-empty, got {text!r}")
    return user, password


def cmd_app(args: argparse.Namespace) -> int:
    """``attentionflow app``: serve the web interface until interrupted."""
    import math

    from attentionflow.config import load_config
    from attentionflow.models.paths import model_limits, resolve_model_path

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    for name in ("max_frames", "max_upload_mb", "max_size"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive finite number, got {value}")
    from attentionflow.resources import check_device

    check_device(args.device, args.mixed_precision)  # a bad device fails now, not at the first edit
    auth = parse_auth(args.auth) if args.auth else None
    if not 1 <= args.max_targets <= MAX_TARGETS:
        raise ConfigError(f"--max-targets must be from 1 to {MAX_TARGETS}, got {args.max_targets}")
    if not is_loopback(args.host) and auth is None:
        if not args.insecure:
            raise ConfigError(f"--host {args.host} lets other machines run edits; require a login with --auth "
                              f"USER:PASS (or pass --insecure to serve without one)")
        logger.warning("serving on %s without a login (--insecure): anyone who can reach it can run edits", args.host)
    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host  # IPv6: gradio's form
    _check_port_free(host, args.port)
    web._import_gradio()
    defaults = load_config(args.config) if args.config else None
    model = args.model or (defaults.pretrained_model_path if defaults is not None else "embedded")
    model_limits(resolve_model_path(model))  # a bad model folder is an error now, not at the first edit
    settings = AppSettings(model=model, device=args.device, mixed_precision=args.mixed_precision,
                           max_frames=args.max_frames, max_upload_mb=args.max_upload_mb, max_size=args.max_size,
                           defaults=defaults, max_targets=args.max_targets)
    try:
        demo, session = web.launch_app(settings, host=host, port=args.port, block=False, auth=auth)
    except OSError as exc:  # the port was taken in between
        raise ConfigError(f"cannot serve on {args.host} port {args.port}: {exc}; choose another --port") from None
    print(web.startup_line(demo), file=sys.stderr)
    try:
        wait_for_stop()
    finally:
        demo.close()
        session.close()
    return 0


def wait_for_stop() -> None:
    """Block the main thread until Ctrl-C or SIGTERM arrive (as exceptions). Not gradio's ``block_thread``: it
    swallows both, and the command must end with 130 / 143."""
    while True:
        time.sleep(3600)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``attentionflow app`` to an argparse subparsers object (handler under ``func``)."""
    a = subparsers.add_parser("app", help="web interface (Gradio; pip install attentionflow[app])",
                              description="Serve a web page for editing videos: upload or toy example, prompts, "
                                          "motion word, MMI options; shows the results and a zip to download.")
    a.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                   "any other address needs --auth or --insecure)")
    a.add_argument("--port", type=int, default=7860, help="port, 1-65535 (default 7860)")
    a.add_argument("--auth", metavar="USER:PASS", help="require this login (gradio's auth)")
    a.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without --auth")
    a.add_argument("--model", help="diffusers folder, cached hub id, or 'embedded' (default)")
    a.add_argument("--config", help="YAML config whose values fill the form")
    a.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    a.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="compute dtype")
    a.add_argument("--max-frames", type=int, default=32, help="most frames per edit (default 32)")
    a.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload in MiB (default 50)")
    a.add_argument("--max-size", type=int, default=1024, help="largest frame width/height (default 1024)")
    a.add_argument("--max-targets", type=int, default=AppSettings.max_targets,
                   help=f"most target prompts per request (default {AppSettings.max_targets})")
    a.set_defaults(func=cmd_app)
