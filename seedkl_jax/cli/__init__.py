"""`seedkl <command> [--flags]`: a thin dispatcher over `seedkl_jax.api`.

Each command is a module under seedkl_jax/cli/ that defines its absl flags and `main(argv)`; only
the chosen command's module is imported, so `seedkl run --help` lists run's flags and nothing else.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("seedkl_jax.cli.demo", "train a mini seed suite offline and run the whole study on it"),
    "run": ("seedkl_jax.cli.run", "run the convergence study on a suite (sizes x steps x seeds)"),
    "convert": ("seedkl_jax.cli.convert", "convert a HF checkpoint (GPT-NeoX, GPT-2, BERT) into the params cache"),
}


def _usage() -> str:
    lines = ["usage: seedkl <command> [--flags]   (seedkl <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<8} {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    cmd = argv[1]
    if cmd not in COMMANDS:
        print(f"seedkl: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from absl import app, flags, logging

    from seedkl_jax.errors import SeedKLError

    module = importlib.import_module(COMMANDS[cmd][0])
    # absl's --help lists the flags of the module named by argv[0]: name it after the command.
    prog = f"seedkl {cmd}"
    sys.argv[0] = prog
    for flag in flags.FLAGS.get_flags_for_module(module.__name__):
        flags.FLAGS.register_flag_by_module(prog, flag)

    def guarded(args):
        if not flags.FLAGS["verbosity"].present:  # orbax/XLA log every save step at INFO
            logging.set_verbosity(logging.WARNING)
        try:
            return module.main(args)
        except SeedKLError as e:  # bad input: one line, no traceback
            print(f"seedkl {cmd}: error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded, argv=[prog] + argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
