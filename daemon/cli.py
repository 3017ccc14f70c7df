"""The ``alchemist`` command: run the daemon, talk to it, manage recipes.

Every verb that fails says why in one line on stderr and exits non-zero.
Client verbs find the daemon through ``--url``, else the config's
``nats.url``, else the URL an embedded daemon wrote to ``<state>/nats.url``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

import nats.errors
import tomli_w

from alchemist import __version__
from alchemist.adapters import SecretError
from alchemist.answers.recipes import Recipe, RecipeError
from alchemist.daemon.config import Config, ConfigError, default_document, load_config
from alchemist.daemon.runtime.launch import cmd_run, run_verb
from alchemist.daemon.storage.broker import BrokerError, connect


class CliError(Exception):
    """A one-line reason to exit non-zero."""


def _config(args: argparse.Namespace) -> Config:
    path = getattr(args, "config", None)
    return load_config(Path(path) if path else None)


def client_url(cfg: Config, explicit: str | None) -> str:
    """Where a client verb should connect."""
    if explicit:
        return explicit
    if not cfg.nats.embedded:
        return cfg.nats.url
    marker = cfg.state_dir / "nats.url"
    if marker.exists():
        return marker.read_text().strip()
    raise CliError(f"no running daemon found (no {marker}); start one with `alchemist run` "
                   "or pass --url nats://host:port")


async def _client(args: argparse.Namespace) -> tuple[Config, Any]:
    cfg = _config(args)
    nc = await connect(cfg.nats, client_url(cfg, args.url), name="alchemist-cli",
                       connect_timeout=3.0, reconnect=False)
    return cfg, nc


# -- verbs ---------------------------------------------------------------------------------------

async def cmd_config_init(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.exists() and not args.force:
        raise CliError(f"{path} exists; pass --force to overwrite it")
    path.write_text(tomli_w.dumps(default_document()))
    load_config(path)  # what we write must load
    print(f"wrote {path}; edit [[providers]], then: alchemist run -c {path}")
    return 0


async def cmd_ask(args: argparse.Namespace) -> int:
    cfg, nc = await _client(args)
    body: dict[str, Any] = {"prompt": args.text, "recipe": args.recipe,
                            "deadline_ms": int(args.timeout * 1000)}
    if args.skill:
        body["skill"] = args.skill
    try:
        msg = await nc.request(f"{cfg.service.subject_prefix}.infer", json.dumps(body).encode(),
                               timeout=args.timeout + 1.0,
                               headers={"Content-Type": "application/json"})
    except Exception as exc:  # noqa: BLE001 - NoResponders, Timeout...: one line for the user
        raise CliError(f"no answer from the daemon: {type(exc).__name__}") from None
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0 if "error" not in reply else 1
    if "error" in reply:
        raise CliError(f"{reply['error']['code']}: {reply['error']['message']}")
    print(reply["text"])
    print(f"\n-- answer {reply['answer']!r}  confidence {reply['confidence']:.2f}  "
          f"from {reply['provider']}  recipe {reply['recipe']['name']} "
          f"v{reply['recipe']['version']}  {reply['latency_ms']:.0f} ms  "
          f"id {reply['request_id']}", file=sys.stderr)
    for p in reply["providers"]:
        status = "ok" if p["ok"] else p.get("error", "failed")
        print(f"   {p['name']:<24} {status:<14} {p['latency_ms']:>8.0f} ms  "
              f"{p.get('answer', '')!s:.40}", file=sys.stderr)
    return 0


async def cmd_feedback(args: argparse.Namespace) -> int:
    cfg, nc = await _client(args)
    rating = {"up": 1, "down": -1}[args.rating]
    payload = {"request_id": args.request_id, "rating": rating, "user": args.user,
               "ts": time.time()}
    try:
        ack = await nc.jetstream(timeout=5.0).publish(
            f"{cfg.service.subject_prefix}.feedback", json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"})
    except Exception as exc:  # noqa: BLE001 - no stream: the daemon never ran on this broker
        raise CliError(f"feedback not stored: {type(exc).__name__} (has the daemon run "
                       "against this NATS server?)") from None
    finally:
        await nc.close()
    print(f"stored rating {args.rating} for {args.request_id} (stream {ack.stream}, "
          f"seq {ack.seq})")
    return 0


async def _with_store(args: argparse.Namespace, fn: Callable[[Any], Awaitable[int]]) -> int:
    from alchemist.daemon.storage.recipe_store import RecipeStore

    cfg, nc = await _client(args)
    store = RecipeStore(nc, cfg.service.subject_prefix)
    try:
        await store.open(create=False)
        return await fn(store)
    finally:
        await nc.close()


def _show(recipe: Recipe) -> str:
    providers = sorted({p for row in recipe.weights.values() for p in row})
    waves = f", first_wave {recipe.first_wave}, stop_margin {recipe.stop_margin}"
    lines = [f"recipe {recipe.name} v{recipe.version} ({recipe.reason}, strategy {recipe.strategy}, "
             f"answer {recipe.answer.kind}, min_weight {recipe.min_weight}, explore "
             f"{recipe.explore}{waves if recipe.first_wave else ''})"]
    if recipe.fitness is not None:
        lines.append(f"  fitness {recipe.fitness:.4f} vs incumbent "
                     f"{recipe.baseline_fitness or 0:.4f} on {recipe.n_ratings} ratings, "
                     f"generation {recipe.generation}")
    lines.append("  " + "skill".ljust(12) + "".join(p[:14].rjust(15) for p in providers))
    for skill, row in sorted(recipe.weights.items()):
        lines.append("  " + skill[:12].ljust(12)
                     + "".join(f"{row.get(p, float('nan')):15.3f}" for p in providers))
    for skill, chosen in sorted(recipe.templates.items()):
        lines.append(f"  templates {skill}: "
                     + ", ".join(f"{p} -> {name}" for p, name in sorted(chosen.items())))
    return "\n".join(lines)


async def cmd_recipe(args: argparse.Namespace) -> int:
    async def act(store: Any) -> int:
        if args.action == "show":
            recipe = await store.refresh(args.name)
            if recipe is None:
                raise CliError(f"no recipe named {args.name!r}")
            print(json.dumps(recipe.to_dict(), indent=2) if args.json else _show(recipe))
        elif args.action == "history":
            for r in await store.history(args.name):
                fit = f"fitness {r.fitness:.4f}" if r.fitness is not None else ""
                print(f"v{r.version:<4} {r.reason:<9} parent {r.parent!s:<5} "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.created_at))}  "
                      f"{r.n_ratings:>6} ratings  {fit}")
        elif args.action == "rollback":
            new = await store.rollback(args.name, args.to)
            print(f"recipe {new.name} is now v{new.version} (weights of v{args.to or 'parent'})")
        elif args.action == "export":
            recipe = await store.refresh(args.name)
            if recipe is None:
                raise CliError(f"no recipe named {args.name!r}")
            text = recipe.to_toml()
            if args.output:
                Path(args.output).write_text(text)
            else:
                print(text, end="")
        elif args.action == "import":
            imported = Recipe.from_toml(Path(args.file).read_text())
            new = await store.write_new_version(imported.name, lambda cur: cur.successor(
                weights=imported.weights, templates=imported.templates, strategy=imported.strategy,
                answer=imported.answer, min_weight=imported.min_weight, explore=imported.explore,
                first_wave=imported.first_wave, stop_margin=imported.stop_margin, reason="manual",
                fitness=None, baseline_fitness=None))
            print(f"recipe {new.name} is now v{new.version} (imported from {args.file})")
        return 0

    return await _with_store(args, act)


async def cmd_probe_run(args: argparse.Namespace) -> int:
    """Run probe suites against the configured providers (no daemon, no NATS needed).

    With ``--templates``, every probe is asked once per option of its skill (as
    written, then with each template) and the table has a column per template.
    """
    from alchemist.adapters import build_provider, make_session
    from alchemist.daemon.learning.prober import accuracy_table, probe_providers
    from alchemist.daemon.runtime.app import provider_spec
    from alchemist.daemon.serving.fanout import FanOut
    from alchemist.probes.suites import Probe, Template, load_suites, template_catalog

    cfg = _config(args)
    suites = load_suites(cfg.probes.suites_dir, shipped=cfg.probes.shipped_suites)
    catalog = template_catalog(suites)
    if args.suite:
        suites = [s for s in suites if s.name == args.suite]
        if not suites:
            raise CliError(f"no probe suite named {args.suite!r}")
    specs = [provider_spec(p) for p in cfg.providers
             if not args.provider or p.name == args.provider]
    if not specs:
        raise CliError("no providers to probe: add [[providers]] to the config"
                       + (f" (or check --provider {args.provider})" if args.provider else ""))
    asks: list[tuple[Probe, Template | None]] = [
        (probe, t) for s in suites for probe in s.probes
        for t in ([None, *catalog.get(probe.skill, ())] if args.templates else [None])]
    session = make_session()
    try:
        fanout = FanOut({s.name: build_provider(s, session) for s in specs}, cfg.breaker)
        names = list(fanout.providers)
        results = []
        for i, (probe, template) in enumerate(asks, 1):
            results.append(await probe_providers(fanout, names, probe, cfg.probes.timeout_s,
                                                 dict.fromkeys(names, template)))
            sys.stderr.write(f"\rprobing: {i}/{len(asks)} ({probe.suite})        ")
            sys.stderr.flush()
        sys.stderr.write("\n")
    finally:
        await session.close()
    table = accuracy_table(results, by_template=args.templates)
    columns = list(dict.fromkeys(column for row in table.values() for column in row))
    if not args.templates:
        columns.sort()
    width = max([8, *(len(c) + 2 for c in columns)])
    print("provider".ljust(24) + "".join(c.rjust(width) for c in columns))
    for name, row in table.items():
        cells = [f"{row[c][0]}/{row[c][1]}" if c in row else "-" for c in columns]
        print(name[:24].ljust(24) + "".join(c.rjust(width) for c in cells))
    if args.templates:
        print("\nbest template per provider and skill (ties: the first):")
        for name, row in table.items():
            best: dict[str, tuple[float, str]] = {}
            for column, (passed, total) in row.items():
                skill, option = column.split("/", 1)
                if passed / total > best.get(skill, (-1.0, ""))[0]:
                    best[skill] = (passed / total, option)
            print(f"  {name}: " + ", ".join(f"{skill} -> {t} ({rate:.0%})"
                                            for skill, (rate, t) in best.items()))
    return 0


async def cmd_probe_import(args: argparse.Namespace) -> int:
    """Import a JSONL file of labelled examples as a golden probe suite (``probes/golden.py``)."""
    from alchemist.probes.golden import GoldenError, import_golden

    directory = args.dir or _config(args).probes.suites_dir
    if not directory:
        raise CliError("no directory for the suite: pass --dir, or -c a config with probes.suites_dir")
    try:
        done = import_golden(Path(args.file), suite=args.suite, directory=Path(directory),
                             skill=args.skill, answer=args.answer, force=args.force,
                             progress=lambda n: print(f"importing: {n} lines read", end="\r",
                                                      file=sys.stderr, flush=True))
    except GoldenError as exc:
        print("", *exc.report(), sep="\n", file=sys.stderr)
        raise CliError(str(exc)) from None
    print(done.summary())
    return 0


# -- parser --------------------------------------------------------------------------------------

def _client_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="config file (TOML)")
    p.add_argument("--url", help="NATS URL of the daemon (default: from config / state dir)")


def build_parser() -> argparse.ArgumentParser:
    """The ``alchemist`` argument parser: each verb sets ``fn``, the coroutine that runs it."""
    parser = argparse.ArgumentParser(
        prog="alchemist", description="llm-alchemist: fuse several LLM providers into one better "
        "model. Run the daemon, talk to it, manage its recipes, replay benchmarks, probe providers.")
    parser.add_argument("--version", action="version", version=f"alchemist {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_daemon_verbs(sub)
    _add_request_verbs(sub)
    _add_recipe_verbs(sub)
    _add_probe_verbs(sub)

    from alchemist.daemon.sim.cli import add_sim_verbs

    add_sim_verbs(sub)
    return parser


#: what ``add_subparsers`` returns (argparse names it privately)
_Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_daemon_verbs(sub: _Verbs) -> None:
    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("-c", "--config", help="config file (TOML); default: built-in defaults")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("config", help="config files")
    csub = p.add_subparsers(dest="action", required=True)
    pi = csub.add_parser("init", help="write a default config")
    pi.add_argument("file", nargs="?", default="alchemist.toml")
    pi.add_argument("--force", action="store_true")
    pi.set_defaults(fn=cmd_config_init)


def _add_request_verbs(sub: _Verbs) -> None:
    p = sub.add_parser("ask", help="ask the running daemon one question")
    p.add_argument("text")
    p.add_argument("--recipe", default="default")
    p.add_argument("--skill")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds")
    p.add_argument("--json", action="store_true", help="print the raw JSON reply")
    _client_opts(p)
    p.set_defaults(fn=cmd_ask)

    p = sub.add_parser("feedback", help="rate an answer by its request id")
    p.add_argument("request_id")
    p.add_argument("rating", choices=("up", "down"))
    p.add_argument("--user", default="cli")
    _client_opts(p)
    p.set_defaults(fn=cmd_feedback)


def _add_recipe_verbs(sub: _Verbs) -> None:
    p = sub.add_parser("recipe", help="show, export, import or roll back recipes")
    rsub = p.add_subparsers(dest="action", required=True)
    for action, help_text in (("show", "the current version"), ("history", "stored versions"),
                              ("rollback", "republish an earlier version"),
                              ("export", "write TOML")):
        pr = rsub.add_parser(action, help=help_text)
        pr.add_argument("name", nargs="?", default="default")
        _client_opts(pr)
        pr.set_defaults(fn=cmd_recipe)
        if action == "show":
            pr.add_argument("--json", action="store_true")
        if action == "rollback":
            pr.add_argument("--to", type=int, help="version to restore (default: the parent)")
        if action == "export":
            pr.add_argument("-o", "--output")
    pr = rsub.add_parser("import", help="publish a recipe from TOML as a new version")
    pr.add_argument("file")
    _client_opts(pr)
    pr.set_defaults(fn=cmd_recipe)


def _add_probe_verbs(sub: _Verbs) -> None:
    p = sub.add_parser("probe", help="probe suites: crafted prompts with known answers")
    psub = p.add_subparsers(dest="action", required=True)
    pr = psub.add_parser("run", help="run probe suites against the configured providers")
    pr.add_argument("-c", "--config", help="config file (TOML)")
    pr.add_argument("--suite", help="only this suite")
    pr.add_argument("--provider", help="only this provider")
    pr.add_argument("--templates", action="store_true",
                    help="ask every probe with each of its skill's templates too, one column each")
    pr.set_defaults(fn=cmd_probe_run)
    pi = psub.add_parser("import", help="import labelled examples (JSONL) as a golden suite")
    pi.add_argument("file", help="JSON lines: prompt or messages, gold, [skill], [answer], [id]")
    pi.add_argument("--suite", required=True, help="the suite's name (file DIR/NAME.toml)")
    pi.add_argument("--dir", help="where to write it (default: the config's probes.suites_dir)")
    pi.add_argument("--skill", help="the skill of lines that give none")
    pi.add_argument("--answer", help="the answer kind of lines that give none: KIND[:FIELD]")
    pi.add_argument("--force", action="store_true", help="replace an existing suite file")
    pi.add_argument("-c", "--config", help="config file (TOML), for probes.suites_dir")
    pi.set_defaults(fn=cmd_probe_import)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alchemist`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return run_verb(args)  # `run` on its config's event loop, the rest on asyncio's
    except KeyboardInterrupt:
        return 130
    except (CliError, ConfigError, RecipeError, BrokerError, SecretError, OSError,
            ValueError) as exc:
        print(f"alchemist: {exc}", file=sys.stderr)
        return 2
    except nats.errors.Error as exc:
        print(f"alchemist: NATS said {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
