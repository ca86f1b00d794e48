"""Command line: ``edgeproxy serve|check|demo|topology``.

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
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
