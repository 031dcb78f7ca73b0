"""The command-line side of ``rpnet run``, ``rpnet status`` and ``rpnet sweep`` (parsers and actions)."""

from __future__ import annotations

import argparse
from pathlib import Path



def add_config_arguments(parser: argparse.ArgumentParser, example: str = "configs/synthetic.yaml",
                         override: str = "model.prototypes=false", every_run: bool = False) -> None:
    """The ``CONFIG`` argument and the repeatable ``--set KEY=VALUE`` of every command that reads a config."""
    parser.add_argument("config", type=Path, help=f"YAML config file (e.g. {example})")
    add_override_argument(parser, override, every_run)


def add_override_argument(parser: argparse.ArgumentParser, example: str, every_run: bool = False) -> None:
    where = " in every run" if every_run else ""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key{where}, e.g. --set {example} (repeatable)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``run``, ``status`` and ``sweep`` to the ``rpnet`` subcommands (each sets ``command``)."""
    run = sub.add_parser(
        "run", help="run every stage in one work dir, skipping those whose inputs are unchanged",
        description="Run the stages in order. A stage whose config sections, data and upstream stages are "
                    "unchanged is skipped, a changed one reruns with everything below it, and a stage killed "
                    "half-way is continued. Ends with WORK_DIR/report.html and the status table.",
    )
    add_config_arguments(run, "configs/voc.yaml")
    run.add_argument("--from", dest="start", metavar="STAGE", help="rerun this stage and every later one")
    run.add_argument("--until", metavar="STAGE", help="stop after this stage")
    run.set_defaults(command="run")

    status = sub.add_parser("status", help="which stages of a work dir are done, stale, partial or missing",
                            description="One line per stage: state, when it finished, how long it took, its figures.")
    status.add_argument("work_dir", type=Path)
    status.set_defaults(command="status")

    sweep = sub.add_parser(
        "sweep", help="run a grid of settings (a paper table) and write the table of results",
        description="Run each setting of SWEEP.yaml with `rpnet run` (finished ones are skipped) and write "
                    "OUT/table.md, table.csv and table.json in the layout of the paper's table.",
    )
    sweep.add_argument("sweep", type=Path, help="sweep file (e.g. configs/sweeps/table2_fraction.yaml)")
    add_override_argument(sweep, "data.root=/data/VOC2012", every_run=True)
    sweep.add_argument("--out", type=Path, help="output folder (default: work_dirs/<sweep file name>)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and their overrides, run nothing")
    sweep.set_defaults(command="sweep")


def run_command(args: argparse.Namespace) -> None:
    """Carry out ``run``, ``status`` or ``sweep`` for parsed ``args``."""
    if args.command == "run":
        from ..config import load_config

        run_and_report(load_config(args.config, args.overrides), start=args.start, until=args.until)
    elif args.command == "status":
        from .status import format_status

        print(format_status(args.work_dir))
    elif args.command == "sweep":
        from ..sweep import default_out, format_plan, plan_sweep, run_sweep

        out = args.out or default_out(args.sweep)
        if args.dry_run:
            print(format_plan(plan_sweep(args.sweep, out, args.overrides)))
        else:
            from ..engine.distributed import session, world

            first = plan_sweep(args.sweep, out, args.overrides)[0].config  # under torchrun: join once
            with session(first.engine.backend, first.device):
                table = run_sweep(args.sweep, out, args.overrides)
                main = world().is_main
            if main:
                print(table.markdown)
    else:  # pragma: no cover - build_parser only sets the commands above
        raise ValueError(f"not a pipeline command: {args.command!r}")


def run_and_report(cfg, *, start: str | None = None, until: str | None = None) -> Path:
    """``rpnet run``: the pipeline (joining torchrun's group when there is one), then the report and status."""
    from ..engine.distributed import session, world
    from ..layout import WorkDir
    from ..report import write_report
    from .runner import run_pipeline
    from .status import format_status

    with session(cfg.engine.backend, cfg.device):
        run_pipeline(cfg, start=start, until=until)
        main = world().is_main
    work = Path(cfg.work_dir)
    if main:
        report = write_report({work.name: work}, WorkDir(work).report, title=f"rpnet: {work.name}")
        print(format_status(work))
        print(f"report: {report}")
    return work
