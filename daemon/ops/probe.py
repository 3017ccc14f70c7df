"""The ``alchemist probe`` verbs: run suites against the providers, import a golden set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from alchemist.daemon.cli import CliError, _config

__all__ = ["add_probe_verbs", "cmd_probe_import", "cmd_probe_run"]


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


def add_probe_verbs(sub: Any) -> None:
    """Register ``probe run`` and ``probe import`` on the ``alchemist`` parser."""
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
