"""Command line: ``edgeproxy serve|check|demo|topology|invalidate|warm|report|sign``.

Exit status 2 with one line naming the file, the key and the problem on a bad config.
"""

from __future__ import annotations

import argparse
import logging
import sys

from edgeproxy.config import ConfigError, check_environment, load_config


def _load(path: str):
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"edgeproxy: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"edgeproxy: {path}: cannot read: {exc.strerror}", file=sys.stderr)
        sys.exit(2)


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    problems = check_environment(config)
    for problem in problems:
        print(f"edgeproxy: {args.config}: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(
        f"edgeproxy: {args.config}: ok (node {config.node.name}, role {config.node.role}, "
        f"{len(config.policies)} policies)"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    problems = check_environment(config)
    if problems:
        for problem in problems:
            print(f"edgeproxy: {args.config}: {problem}", file=sys.stderr)
        return 2
    from edgeproxy.app import serve

    serve(config)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edgeproxy.demo import run_demo

    return run_demo(port=args.port, workdir=args.workdir)


def cmd_topology(args: argparse.Namespace) -> int:
    from edgeproxy import topology

    if args.action == "up":
        return topology.cmd_up(args.file, as_json=args.json, workdir=args.workdir)
    if args.action == "down":
        return topology.cmd_down(args.file, workdir=args.workdir)
    return topology.cmd_status(args.file, as_json=args.json, workdir=args.workdir)


def _add_topology_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "topology",
        help="a local multi-tier topology: origin, shield, regionals, edges (see tiers/local.toml)",
    )
    actions = p.add_subparsers(dest="action", required=True)
    for action, text in (
        ("up", "start every process, print the URLs, stop them all on Ctrl-C"),
        ("down", "stop a topology started by `up` (from any shell), by PID"),
        ("status", "report each process and its /healthz; exit 0 when all are healthy"),
    ):
        a = actions.add_parser(action, help=text)
        a.add_argument("file", help="topology file, e.g. tiers/local.toml")
        a.add_argument("--workdir", default=None, help="override the file's workdir")
        if action != "down":
            a.add_argument("--json", action="store_true", help="one JSON object on one line")
    p.set_defaults(func=cmd_topology)


def _ops_targets(args: argparse.Namespace):
    from edgeproxy import ops

    targets, stored = ops.load_targets(args.topology, args.nodes, args.workdir)
    return targets, ops.pick_token(stored)


def cmd_invalidate(args: argparse.Namespace) -> int:
    from edgeproxy import ops

    try:
        targets, token = _ops_targets(args)
        return ops.invalidate(targets, args.paths, token, hard=args.hard, wait=args.wait)
    except ops.OpsError as exc:
        print(f"edgeproxy invalidate: {exc}", file=sys.stderr)
        return 2


def cmd_warm(args: argparse.Namespace) -> int:
    from edgeproxy import ops

    try:
        targets, token = _ops_targets(args)
        paths = list(args.paths)
        if not paths:
            paths = ops.popular_paths(targets, args.source, args.top, token)
            print(
                f"edgeproxy warm: {len(paths)} path(s) from the popularity of {args.source}",
                file=sys.stderr,
            )
        return ops.warm(targets, paths, token, to=args.to)
    except ops.OpsError as exc:
        print(f"edgeproxy warm: {exc}", file=sys.stderr)
        return 2
    except ops.AdminError as exc:
        print(f"edgeproxy warm: {exc}", file=sys.stderr)
        return 1


def cmd_report(args: argparse.Namespace) -> int:
    from edgeproxy import ops

    try:
        targets, token = _ops_targets(args)
        return ops.report(
            targets,
            token,
            price_per_gb=args.price_per_gb,
            html=args.html,
            top=args.top,
            min_requests=args.min_requests,
        )
    except ops.OpsError as exc:
        print(f"edgeproxy report: {exc}", file=sys.stderr)
        return 2


def _add_ops_parsers(sub: argparse._SubParsersAction) -> None:
    def where(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--topology", help="a running topology's file (its state file)")
        group.add_argument(
            "--nodes", help="JSON node list (the line of `topology up --json`); - for stdin"
        )
        p.add_argument("--workdir", default=None, help="override the topology file's workdir")

    p = sub.add_parser(
        "invalidate",
        help="invalidate paths on every node: shield, then regionals, then edges",
        description="Token: $EDGEPROXY_ADMIN_TOKEN, else the topology's state file.",
    )
    where(p)
    p.add_argument("--hard", action="store_true", help="delete instead of marking stale")
    p.add_argument("--wait", type=float, default=30.0, help="seconds per tier to complete")
    p.add_argument("paths", nargs="+", metavar="PATH", help="exact, or a prefix ending in *")
    p.set_defaults(func=cmd_invalidate)
    p = sub.add_parser(
        "warm",
        help="fetch the hottest (or given) paths through every edge",
        description="Token: $EDGEPROXY_ADMIN_TOKEN, else the topology's state file.",
    )
    where(p)
    p.add_argument(
        "--from", dest="source", default="shield", help="node or role whose /popular to use"
    )
    p.add_argument("--top", type=int, default=500, help="how many popular paths")
    p.add_argument("--to", default="edge", help="role (or node) to warm (default edge)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="these paths instead of --from")
    p.set_defaults(func=cmd_warm)
    p = sub.add_parser(
        "report",
        help="scrape every node: hit ratios, offload, savings, TTFB, top paths, advice",
        description="Token: $EDGEPROXY_ADMIN_TOKEN, else the topology's state file.",
    )
    where(p)
    p.add_argument(
        "--price-per-gb", type=float, default=0.09, help="origin egress price per GB (2^30 B)"
    )
    p.add_argument("--html", default=None, metavar="FILE", help="also write a self-contained page")
    p.add_argument("--top", type=int, default=10, help="top paths per tier")
    p.add_argument(
        "--min-requests", type=int, default=20, help="judge a tier's hit ratio from N requests"
    )
    p.set_defaults(func=cmd_report)


def cmd_sign(args: argparse.Namespace) -> int:
    """Print ``args.url`` signed for ``[policy.signed_urls] type = "hmac"`` (secret from the
    environment variable the policy names)."""
    import os
    import time

    from edgeproxy.config import parse_duration
    from edgeproxy.signing import parse_keys, sign_url

    def fail(message: str) -> int:
        print(f"edgeproxy sign: {message}", file=sys.stderr)
        return 2

    text = os.environ.get(args.keys_env)
    if not text:
        return fail(f'{args.keys_env} is not set; export "id:secret[,id2:secret2]"')
    try:
        keys = parse_keys(text)
    except ValueError as err:
        return fail(f"{args.keys_env}: {err}")
    key_id = args.key_id or next(iter(keys))
    if key_id not in keys:
        return fail(f"key id {key_id!r} is not in {args.keys_env} (ids: {', '.join(keys)})")
    try:
        lifetime = parse_duration(args.expires)
    except ValueError as err:
        return fail(f"--expires: {err}")
    if lifetime <= 0:
        return fail("--expires: must be longer than 0s")
    expires = int(time.time() + lifetime)
    try:
        print(sign_url(args.url, keys[key_id], key_id, expires, prefix=args.prefix))
    except ValueError as err:
        return fail(str(err))
    return 0


def _add_sign_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sign",
        help='print a signed URL for a policy with [policy.signed_urls] type = "hmac"',
        description="The secret comes from the environment (--keys-env), never the command line.",
    )
    p.add_argument("url", help="a URL or path, e.g. https://cdn.example/audio/a/t1.mp3?quality=hi")
    p.add_argument("--expires", default="1h", help='lifetime from now, e.g. "1h", "7d" (1h)')
    p.add_argument("--key-id", default=None, help="key id to sign with (default: the first)")
    p.add_argument("--prefix", default=None, help="sign a path prefix instead, e.g. /audio/album1/")
    p.add_argument(
        "--keys-env",
        default="EDGEPROXY_URL_KEYS",
        help="variable holding id:secret[,id:secret] (default EDGEPROXY_URL_KEYS)",
    )
    p.set_defaults(func=cmd_sign)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproxy", description="edge caching proxy")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run a node")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("check", help="validate a config file (like nginx -t)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("demo", help="SeaweedFS with demo content and one node in front of it")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workdir", default="var/demo")
    p.set_defaults(func=cmd_demo)
    _add_topology_parser(sub)
    _add_ops_parsers(sub)
    _add_sign_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
