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

    from alchemist.daemon.ops.probe import add_probe_verbs
    from alchemist.daemon.ops.status import add_status_verb
    from alchemist.daemon.sim.cli import add_sim_verbs

    add_probe_verbs(sub)
    add_status_verb(sub, _client_opts)
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
