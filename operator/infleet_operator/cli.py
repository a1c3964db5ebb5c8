"""``infleet``: the user CLI (crd, validate, simulate, dev)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infleet_operator import crd, manifests


def _cmd_crd(args: argparse.Namespace) -> int:
    text = crd.render_crd_yaml()
    if args.check:
        target = Path(args.check) / crd.CRD_FILENAME
        if not target.exists() or target.read_text() != text:
            print(f"{target} is out of date: run `make crds`", file=sys.stderr)
            return 1
        print(f"{target} matches the models")
        return 0
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / crd.CRD_FILENAME).write_text(text)
        print(f"wrote {out / crd.CRD_FILENAME}")
        return 0
    sys.stdout.write(text)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for name in args.files:
        good, bad = manifests.validate_file(Path(name))
        for obj in good:
            print(f"ok    {name}: {obj.metadata.get('name')}")
        for problem in bad:
            failed += 1
            print(f"error {problem.path}: {problem.name}", file=sys.stderr)
            for line in problem.errors:
                print(f"      {line}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The example fleets, validated and explained. The live fleet (a control plane,
    real traffic) needs a checkout's e2e/ harness: ``make demo`` runs it."""
    from infleet_operator import demo

    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_crd = sub.add_parser("crd", help="render the InferenceDeployment CRD from the models")
    group = p_crd.add_mutually_exclusive_group()
    group.add_argument("--out", help="write into this directory")
    group.add_argument("--check", help="fail when this directory's CRD differs from a render")
    p_crd.set_defaults(func=_cmd_crd)

    p_val = sub.add_parser("validate", help="check InferenceDeployment manifests offline")
    p_val.add_argument("files", nargs="+")
    p_val.set_defaults(func=_cmd_validate)

    from infleet_operator.simulator.cli import add_simulate_parser, run_simulate

    p_sim = add_simulate_parser(sub)
    p_sim.set_defaults(func=run_simulate)

    p_dev = sub.add_parser("dev", help="developer tools")
    dev_sub = p_dev.add_subparsers(dest="dev_command", required=True)
    p_demo = dev_sub.add_parser(
        "demo", help="validate and show the example fleets (the live fleet: `make demo`)"
    )
    p_demo.add_argument("--examples", default="manifests/examples")
    p_demo.add_argument(
        "--static", action="store_true", help="kept for old scripts: this is all it does"
    )
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
