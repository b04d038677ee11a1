"""The ``stream-router`` command.

stream-router demo [--duration S] [--rate N] [--config F] [--backend a2i|label-studio]
                                        the router on the sandbox with a synthetic model
stream-router tail TOPIC                print a topic's records as JSON lines
stream-router produce TOPIC < FILE      publish a file's lines, one record each
stream-router topics create --config F  create the router's topics that are missing
stream-router sandbox up [--broker kafka|tansu] [--config F] [--backend a2i|label-studio]
                         [--brokers 3]  broker, moto and A2I emulator (and Label Studio) in
                                        the foreground; --brokers 3: a three-node Apache
                                        Kafka cluster, topics replicated 3 times
stream-router sandbox env               shell exports for the running sandbox
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_INFO_FILE = Path.home() / ".stream-router" / "sandbox.json"


def _info_file() -> Path:
    return Path(os.environ.get("STREAM_ROUTER_SANDBOX_FILE", DEFAULT_INFO_FILE))


async def _sandbox_up(args: argparse.Namespace) -> int:
    from stream_router.sandbox.settings import SandboxSettings  # noqa: PLC0415
    from stream_router.sandbox.stack import Sandbox, default_broker_kind  # noqa: PLC0415

    settings = SandboxSettings.from_yaml(args.config)
    if args.topic:
        settings = settings.model_copy(update={"topics": [*settings.topics, *args.topic]})
    broker = args.broker or default_broker_kind()
    if broker == "kafka" and args.broker_storage != "memory":
        print("stream-router: --broker-storage is for --broker tansu", file=sys.stderr)
        return 2
    if args.brokers != 1 and (broker != "kafka" or args.brokers < 1):
        print("stream-router: --brokers N (N > 1) is for --broker kafka", file=sys.stderr)
        return 2
    info_file = _info_file()
    refusal = _claim_info_file(info_file)
    if refusal:
        print(f"stream-router sandbox up: {refusal}", file=sys.stderr)
        return 1
    try:
        return await _serve_sandbox(args, settings, broker, info_file, Sandbox)
    finally:
        _release_info_file(info_file)


async def _serve_sandbox(
    args: argparse.Namespace, settings: Any, broker: str, info_file: Path, sandbox_type: Any
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"# broker: {_BROKER_REASON[broker, args.broker is not None]}", flush=True)
    if args.brokers > 1:
        replicas = min(args.brokers, 3)
        print(f"# {args.brokers} nodes: topics replicated {replicas} times, 2 in sync required "
              "(topics create reads it from the exports)", flush=True)  # fmt: skip
    if args.backend == "label-studio":
        print("# reviews: Label Studio (installed into its own environment on first use)")
    async with sandbox_type(
        settings,
        broker=broker,
        broker_storage=args.broker_storage,
        state_dir=args.state_dir,
        backend=args.backend,
        brokers=args.brokers,
    ) as sandbox:
        info = sandbox.info()
        _write_info_file(info_file, {"pid": os.getpid(), **dataclasses.asdict(info)})
        print(
            f"sandbox ready in {sandbox.startup_s:.2f} s "
            f"({sandbox.resident_bytes() / 1e6:.0f} MB resident)"
        )
        print(_exports(info.router_env()))
        print(f"# flow definitions: {json.dumps(info.flow_definition_arns)}")
        print(f"# output bucket: s3://{info.output_bucket}/{info.output_prefix}")
        print(f"# status events queue: {info.event_queue_url}")
        print(f"# output.json notifications queue: {info.output_queue_url}")
        print(
            f"# A2I worker portal (work tasks yourself in a browser): {info.a2i_endpoint_url}/ ; "
            "SageMaker's control plane for your own task UIs and flow definitions: "
            "AWS_ENDPOINT_URL_SAGEMAKER"
        )
        if info.label_studio_url:
            print(
                f"# Label Studio: {info.label_studio_url} (log in as {info.label_studio_user}, "
                f"password {info.label_studio_password}); projects "
                f"{json.dumps(info.label_studio_projects)}; router config: "
                "config/router-label-studio.yaml"
            )
        print(
            "# ports are new at every start: after a restart, stop the router and run "
            'eval "$(stream-router sandbox env)" and topics create again',
        )
        print('# in another shell: eval "$(stream-router sandbox env)"; Ctrl-C stops', flush=True)
        await stop.wait()
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _read_info_file(path: Path) -> dict[str, Any] | None:
    """The sandbox state file's content; None when absent or unreadable (a stale leftover)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _claim_info_file(path: Path) -> str | None:
    """Make ``path`` this process's sandbox state file, or say which sandbox holds it.

    One state file, one sandbox: ``sandbox env`` reads it and a second ``sandbox up`` would
    overwrite it (and delete it when stopping) while the first still runs. A file whose process
    is gone is a leftover of a killed sandbox and is taken over.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            held = _read_info_file(path)
            if held is not None and held["pid"] != os.getpid() and _pid_alive(held["pid"]):
                where = held.get("bootstrap_servers")
                state = f"Kafka at {where}" if where else "still starting"
                return (
                    f"a sandbox is already running (pid {held['pid']}, {state}; its state file "
                    f'is {path}). Use it (eval "$(stream-router sandbox env)"), stop it '
                    f"(Ctrl-C in its terminal, or kill {held['pid']}), or run a second one on "
                    "its own state file: STREAM_ROUTER_SANDBOX_FILE=/tmp/second-sandbox.json "
                    "stream-router sandbox up"
                )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"pid": os.getpid(), "starting": True}, out)
        return None
    return f"cannot claim the sandbox state file {path}: another sandbox keeps taking it"


def _write_info_file(path: Path, data: dict[str, Any]) -> None:
    """Replace the state file's content at once (``sandbox env`` never reads half a file)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data, indent=2), encoding="utf-8")
    partial.chmod(0o600)  # it holds the sandbox's Label Studio login
    os.replace(partial, path)


def _release_info_file(path: Path) -> None:
    held = _read_info_file(path)
    if held is not None and held["pid"] == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink()


_BROKER_REASON = {
    ("kafka", True): "Apache Kafka (chosen with --broker kafka)",
    ("tansu", True): "Tansu (chosen with --broker tansu)",
    ("kafka", False): "Apache Kafka (the default where Java exists; --broker tansu for Tansu)",
    ("tansu", False): "Tansu (no Java here for Apache Kafka, or STREAM_ROUTER_SANDBOX_BROKER)",
}


def _exports(env: dict[str, str]) -> str:
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())


def _sandbox_env(args: argparse.Namespace) -> int:
    from stream_router.sandbox.stack import SandboxInfo  # noqa: PLC0415

    path = _info_file()
    deadline = time.monotonic() + args.wait
    while True:
        data = _read_info_file(path)
        problem = _sandbox_problem(path, data)
        if problem is None or time.monotonic() >= deadline:
            break
        time.sleep(0.2)  # polling a file another process writes; nothing to await here
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    assert data is not None
    data.pop("pid")
    info = SandboxInfo(**data)
    if args.format == "json":
        print(json.dumps({"env": info.router_env(), **dataclasses.asdict(info)}, indent=2))
    else:
        print(_exports(info.router_env()))
    return 0


def _sandbox_problem(path: Path, data: dict[str, Any] | None) -> str | None:
    """Why ``sandbox env`` cannot answer yet (None: it can)."""
    if data is None:
        return f"no sandbox is running (no {path}); start one with: stream-router sandbox up"
    if not _pid_alive(data["pid"]):
        return f"the sandbox recorded in {path} (pid {data['pid']}) is gone; start a new one"
    if data.get("starting"):
        return (
            f"the sandbox (pid {data['pid']}) is still starting; run this again once it prints "
            "'Ctrl-C stops', or add --wait 120"
        )
    return None


def _demo(args: argparse.Namespace) -> int:
    from stream_router.demo.runner import DemoOptions, run_demo  # noqa: PLC0415
    from stream_router.demo.settings import load_demo_settings  # noqa: PLC0415

    settings = load_demo_settings(args.config).with_overrides(
        duration_s=args.duration,
        rate_per_s=args.rate,
        seed=args.seed,
        drain_timeout_s=args.drain_timeout,
    )
    options = DemoOptions(
        state_dir=args.state_dir,
        keep_running=args.keep_running,
        summary_json=args.summary_json,
        live=False if args.plain else None,
        broker=args.broker,
        backend=args.backend,
    )
    return asyncio.run(run_demo(settings, options))


def _kafka_options(args: argparse.Namespace) -> dict[str, Any]:
    """aiokafka options for ``tail`` and ``produce``: the kafka section of ``--config`` and the
    STREAM_ROUTER_KAFKA__* variables, ``--bootstrap-servers`` over both."""
    from stream_router.errors import ConfigError  # noqa: PLC0415
    from stream_router.kafka_clients import client_options  # noqa: PLC0415
    from stream_router.settings import load_settings  # noqa: PLC0415

    env_bootstrap = os.environ.get("STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS")
    if args.config is None and not args.bootstrap_servers and not env_bootstrap:
        raise ConfigError(
            f"{args.command}: give --bootstrap-servers HOST:PORT or --config FILE, or set "
            'STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS (eval "$(stream-router sandbox env)" does)'
        )
    kafka = load_settings(args.config).kafka
    if args.bootstrap_servers:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
    return client_options(kafka)


def _kafka_command(name: str, bootstrap: str, verbose: bool, work: Any) -> int:
    """Run one ``tail`` or ``produce``; Kafka's refusals become one line and exit 1."""
    from aiokafka.errors import KafkaConnectionError, KafkaError  # noqa: PLC0415

    from stream_router.records import PublishError  # noqa: PLC0415

    if not verbose:  # its connection errors become the one line below
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        asyncio.run(work)
    except KeyboardInterrupt:
        return 130
    except (LookupError, PublishError) as exc:
        print(f"stream-router {name}: {exc}", file=sys.stderr)
        return 1
    except KafkaConnectionError:
        print(
            f"stream-router {name}: cannot reach Kafka at {bootstrap}: no broker "
            'answered (for the sandbox: is it running? eval "$(stream-router sandbox env)")',
            file=sys.stderr,
        )
        return 1
    except (KafkaError, OSError) as exc:
        print(
            f"stream-router {name}: cannot reach Kafka at {bootstrap}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def _tail(args: argparse.Namespace) -> int:
    from stream_router.records import tail  # noqa: PLC0415

    options = _kafka_options(args)
    return _kafka_command(
        "tail",
        options["bootstrap_servers"],
        args.verbose,
        tail(options, args.topic, decision=args.decision, follow=args.follow),
    )


def _produce(args: argparse.Namespace) -> int:
    from stream_router.records import publish  # noqa: PLC0415

    options = _kafka_options(args)
    bootstrap = options["bootstrap_servers"]
    if args.input is None:
        lines = sys.stdin.buffer
    else:
        try:
            lines = args.input.open("rb")
        except OSError as exc:
            print(f"stream-router produce: cannot read --input: {exc}", file=sys.stderr)
            return 2
    published: list[Any] = []

    async def work() -> None:
        published.append(await publish(options, args.topic, lines, key_field=args.key_field))

    with lines:
        code = _kafka_command("produce", bootstrap, args.verbose, work())
    if published:
        done = published[0]
        print(
            f"produced {done.records} record{'s' if done.records != 1 else ''} to {args.topic} "
            f"({done.partitions} partition{'s' if done.partitions != 1 else ''}) on "
            f"{bootstrap}",
            file=sys.stderr,
        )
    return code


def _run(args: argparse.Namespace) -> int:
    from stream_router.app import ROLES, run_review_role, run_role  # noqa: PLC0415
    from stream_router.errors import ConfigError  # noqa: PLC0415
    from stream_router.logs import configure_logging  # noqa: PLC0415
    from stream_router.settings import load_settings  # noqa: PLC0415

    if args.role not in ROLES:
        raise ConfigError(f"unknown role {args.role!r}; expected one of {', '.join(ROLES)}")
    settings = load_settings(args.config)
    configure_logging(settings.logging)
    for note in settings.moved_keys():
        logging.getLogger("stream_router.settings").warning("%s", note)
    freeze_start_up_objects()
    if args.role == "ingest":
        asyncio.run(run_role(settings, args.role))
    else:
        run_review_role(settings, args.role)
    return 0


def freeze_start_up_objects() -> None:
    """Move what start-up made (modules, classes, functions, settings: about 63,000 objects
    under ``run --role ingest``) out of the cyclic garbage collector's reach, once its garbage
    is collected.

    They live as long as the process, yet every full collection walked all of them again: a
    spike in ingest's decision latency (``bench_ingest.py``'s latency runs, 2026-12-07: a full
    collection took 60 and 94 ms without, 1.4-7.9 ms with). Frozen (``gc.freeze``), they are
    never traversed; what the role allocates afterwards is collected as before.
    """
    gc.collect()
    gc.freeze()


def _topics_create(args: argparse.Namespace) -> int:
    from stream_router.settings import load_settings  # noqa: PLC0415
    from stream_router.topics import create_topics, router_topics  # noqa: PLC0415

    settings = load_settings(args.config)
    specs = {spec.name: spec for spec in router_topics(settings)}
    for name, result in asyncio.run(create_topics(settings)).items():
        spec = specs[name]
        configs = " ".join(f"{key}={value}" for key, value in spec.configs.items())
        print(f"{result:8} {name}  ({spec.setting}; {_partitions(spec.partitions)}) {configs}")
    return 0


def _partitions(count: int) -> str:
    return f"{count} partition{'' if count == 1 else 's'}"


def _config_check(args: argparse.Namespace) -> int:
    import yaml  # noqa: PLC0415

    from stream_router.policies.routes import Routes  # noqa: PLC0415
    from stream_router.review.shares import budget_notes  # noqa: PLC0415
    from stream_router.settings import load_settings  # noqa: PLC0415

    settings = load_settings(args.file)
    routes = Routes(settings.policies)  # loads and validates every policy
    print(yaml.safe_dump(settings.masked(), sort_keys=False), end="")
    for warning in [*settings.moved_keys(), *settings.privacy_warnings(), *budget_notes(settings)]:
        print(f"# warning: {warning}")
    print(f"# valid: {len(routes.routes)} routes, policy version {routes.version}")
    return 0


def _policies_test(args: argparse.Namespace) -> int:
    from stream_router.backtest import backtest  # noqa: PLC0415
    from stream_router.backtest.command import open_input  # noqa: PLC0415
    from stream_router.settings import load_settings  # noqa: PLC0415

    settings = load_settings(args.config)
    price = args.price if args.price is not None else settings.review.price_per_review_usd
    with open_input(args.input, "policies test") as lines:
        report = backtest(settings, lines)
    print(report.render(price))
    return 0


def _policies_backtest(args: argparse.Namespace) -> int:
    from stream_router.backtest.command import backtest_command  # noqa: PLC0415

    return backtest_command(args, lambda: _kafka_options(args))


def _demo_history(args: argparse.Namespace) -> int:
    from stream_router.demo.history import render, write_history  # noqa: PLC0415
    from stream_router.demo.settings import load_demo_settings  # noqa: PLC0415

    stats = write_history(
        args.output, events=args.events, seed=args.seed, settings=load_demo_settings(args.config)
    )
    print(render(stats))
    return 0


def _policies_list(args: argparse.Namespace) -> int:
    from stream_router.errors import PolicyLoadError  # noqa: PLC0415
    from stream_router.policies.registry import PolicyRegistry  # noqa: PLC0415

    registry = PolicyRegistry()
    failed = 0
    for name in registry.types():
        try:
            cls = registry.load(name)
        except PolicyLoadError as exc:
            failed += 1
            print(f"{name:<16} (cannot be loaded: {exc})")
            continue
        print(f"{name:<16} {cls.summary or cls.__doc__ or ''}".rstrip())
    return 1 if failed else 0


def _add_sandbox_commands(commands: Any) -> None:
    from stream_router.sandbox.a2i.template_command import add_parser  # noqa: PLC0415

    add_parser(commands)  # stream-router template preview / check
    sandbox = commands.add_parser("sandbox", help="the local sandbox")
    sandbox_commands = sandbox.add_subparsers(dest="sandbox_command", required=True)
    up = sandbox_commands.add_parser(
        "up", help="run broker, moto and A2I emulator (and Label Studio with --backend)"
    )
    up.add_argument("--config", type=Path, help="sandbox settings YAML (config/sandbox.yaml)")
    up.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        help="Apache Kafka (default where Java exists) or Tansu (no Java needed)",
    )
    up.add_argument(
        "--broker-storage",
        choices=("memory", "s3"),
        default="memory",
        help="Tansu only: s3 keeps broker data in moto across broker restarts",
    )
    up.add_argument(
        "--backend",
        choices=("a2i", "label-studio"),
        default="a2i",
        help="label-studio also runs a real Label Studio with one project per flow definition "
        "and simulated annotators",
    )
    up.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="Apache Kafka nodes (3: a cluster as in production; topics replicated 3 times, "
        "2 in sync required)",
    )
    up.add_argument("--state-dir", type=Path, help="keep emulator state and logs here")
    up.add_argument("--topic", action="append", default=[], help="create this topic (repeat)")
    up.set_defaults(handler=lambda a: asyncio.run(_sandbox_up(a)))
    env = sandbox_commands.add_parser("env", help="print exports for the running sandbox")
    env.add_argument("--format", choices=("sh", "json"), default="sh")
    env.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for a sandbox that is starting (or about to start)",
    )
    env.set_defaults(handler=_sandbox_env)


def _add_record_commands(commands: Any) -> None:
    tail = commands.add_parser("tail", help="print a topic's records as JSON lines")
    tail.add_argument("topic")
    _add_kafka_options(tail)
    tail.add_argument(
        "--decision",
        choices=("accepted", "reviewed", "unreviewed"),
        help="only result envelopes with this decision",
    )
    tail.add_argument("--follow", action="store_true", help="keep waiting for new records")
    tail.set_defaults(handler=_tail)

    produce = commands.add_parser(
        "produce", help="publish lines of stdin (or --input) to a topic, one record per line"
    )
    produce.add_argument("topic")
    _add_kafka_options(produce)
    produce.add_argument("--input", type=Path, help="read this file instead of stdin")
    produce.add_argument(
        "--key-field", help="key each record by this top-level field of its JSON (e.g. event_id)"
    )
    produce.set_defaults(handler=_produce)


def _add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers", help="default: STREAM_ROUTER_KAFKA__BOOTSTRAP_SERVERS or --config"
    )
    parser.add_argument(
        "--config", type=Path, help="take the kafka section (TLS, SASL) from this configuration"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-router", description="Human-in-the-loop router for real-time ML."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a role until SIGTERM")
    run.add_argument("--config", type=Path, help="configuration YAML (env overrides it)")
    run.add_argument("--role", default="ingest", help="ingest, review, or all (both)")
    run.set_defaults(handler=_run)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate and print the configuration")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_config_check)

    topics = commands.add_parser("topics", help="the router's Kafka topics")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    create = topic_commands.add_parser(
        "create", help="create every topic the router uses that is missing (never alters one)"
    )
    create.add_argument("--config", type=Path, required=True)
    create.set_defaults(handler=_topics_create)

    policies = commands.add_parser("policies", help="policy tools")
    policy_commands = policies.add_subparsers(dest="policies_command", required=True)
    test = policy_commands.add_parser("test", help="evaluate policies over a JSONL file")
    test.add_argument("--config", type=Path, required=True)
    test.add_argument("--input", type=Path, required=True, help="events, one JSON per line")
    test.add_argument("--price", type=float, help="USD per review (default: review section)")
    test.set_defaults(handler=_policies_test)
    listing = policy_commands.add_parser("list", help="installed policy types")
    listing.set_defaults(handler=_policies_list)
    from stream_router.backtest.command import add_parser as add_backtest  # noqa: PLC0415

    add_backtest(policy_commands, _policies_backtest)

    demo = commands.add_parser(
        "demo", help="the router on the local sandbox with a synthetic model, watched live"
    )
    demo.add_argument("--config", type=Path, help="demo settings YAML (see config/demo.yaml)")
    demo.add_argument("--duration", type=float, help="seconds of producing (default 30)")
    demo.add_argument("--rate", type=float, help="predictions per second (default 10)")
    demo.add_argument("--seed", type=int, help="seed of the synthetic model (default 7)")
    demo.add_argument(
        "--drain-timeout", type=float, help="seconds to wait for outcomes after producing"
    )
    demo.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        help="sandbox broker: Apache Kafka (default where Java exists) or Tansu (no Java)",
    )
    demo.add_argument(
        "--backend",
        choices=("a2i", "label-studio"),
        default="a2i",
        help="who reviews: the A2I emulator (default) or a real Label Studio (installed into "
        "its own environment on first use)",
    )
    demo.add_argument("--state-dir", type=Path, help="keep configs and the router log here")
    demo.add_argument(
        "--keep-running", action="store_true", help="keep sandbox and router up until Ctrl-C"
    )
    demo.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    demo.add_argument("--plain", action="store_true", help="periodic lines, even on a terminal")
    demo.set_defaults(handler=_demo)
    demo_commands = demo.add_subparsers(dest="demo_command")
    history = demo_commands.add_parser(
        "history",
        help="write a long history of result envelopes offline (no Kafka): the synthetic model "
        "through the router's routes and simulated reviewers, for policies backtest",
    )
    history.add_argument("--output", type=Path, required=True, help="JSONL file to write")
    history.add_argument("--events", type=int, default=200_000, help="events (default 200000)")
    history.add_argument("--seed", type=int, help="seed (default: the settings' history.seed)")
    history.add_argument("--config", type=Path, help="demo settings YAML (see config/demo.yaml)")
    history.set_defaults(handler=_demo_history)

    _add_record_commands(commands)

    _add_sandbox_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from stream_router.errors import ConfigError  # noqa: PLC0415

    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"stream-router: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
