"""`seedkl <command> [--flags]`: a thin dispatcher over `seedkl_jax.api`.

Each command is a module under seedkl_jax/cli/ that defines its absl flags and `main(argv)`; only
the chosen command's module is imported, so `seedkl run --help` lists run's flags and nothing else.

Exit status (every command): 0 done; 2 bad input or environment (a bad flag, a missing or broken
checkpoint, a busy or full --out: one `seedkl <command>: error: ...` line, no traceback; `seedkl`
alone: the usage); 1 a bug (an unexpected exception, with its traceback); 130 / 143 interrupted by
SIGINT / SIGTERM (one `seedkl <command>: interrupted ...` line: the work unwinds as after Ctrl-C, so
finished groups stay and the lock is released; a second signal while unwinding exits at once).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import signal
import sys

COMMANDS = {
    "demo": ("seedkl_jax.cli.demo", "train a mini seed suite offline and run the whole study on it"),
    "run": ("seedkl_jax.cli.run", "run the convergence study on a suite (sizes x steps x seeds)"),
    "analyze": ("seedkl_jax.cli.analyze", "the analysis and report from per-pair KL tables computed anywhere"),
    "convert": ("seedkl_jax.cli.convert", "convert a HF checkpoint (GPT-NeoX, GPT-2, BERT) into the params cache"),
    "cache": ("seedkl_jax.cli.cache", "list or clear the converted-params cache"),
}
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")
EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT = 0, 1, 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # exit status 128 + the signal's number: 130, 143


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so `except Exception` never swallows it and
    every `finally` on the way out runs (staging removed, lock released)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _usage() -> str:
    lines = ["usage: seedkl <command> [--flags]   (seedkl <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<8} {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "exit status: 0 done, 2 bad input or environment (one error line), 1 a bug (a traceback)"]
    return "\n".join(lines)


def _command_help(module, prog: str) -> str:
    from absl import flags

    doc = (module.__doc__ or "").strip()
    listing = flags.FLAGS.module_help(module.__name__).strip().split("\n", 1)[-1]  # minus its module-name line
    return f"{doc}\n\nflags of {prog} (also --flagfile=FILE):\n{listing}\n"


def quiet_process() -> None:
    """Noise the CLI does not want: transformers warns "PyTorch was not found" on import although
    seedkl needs torch only for pytorch_model.bin files (and then says so itself); orbax's threads
    print "Event loop is closed" tracebacks after a failed save that seedkl reports in one line."""
    try:
        has_torch = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        has_torch = False
    if not has_torch:
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(kind, value, tb)

    sys.excepthook = hook


@contextlib.contextmanager
def stop_signals(prog: str):
    """Inside the block SIGINT and SIGTERM raise Interrupted (in the main thread); a second one while
    the first unwinds prints the line again and exits at once (the kernel still releases the lock).
    The previous handlers come back on exit (main() may be called in-process, by tests)."""
    seen: list[int] = []

    def handler(signum, frame):
        if seen:
            print(interrupted_line(prog, signum), file=sys.stderr, flush=True)
            os._exit(128 + signum)
        seen.append(signum)
        raise Interrupted(signum)

    try:
        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: signals stay as they are
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def interrupted_line(prog: str, signum: int) -> str:
    return f"{prog}: interrupted ({signal.Signals(signum).name}); rerun the same command to resume"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2:
        print(_usage(), file=sys.stderr)
        return EXIT_BAD_INPUT
    if argv[1] in HELP_FLAGS + ("help",):
        print(_usage())
        return EXIT_OK
    cmd = argv[1]
    if cmd not in COMMANDS:
        print(f"seedkl: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    prog = f"seedkl {cmd}"
    with stop_signals(prog):
        try:
            return _command(cmd, argv)
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM: one line, no traceback
            signum = getattr(e, "signum", signal.SIGINT)
            print(interrupted_line(prog, signum), file=sys.stderr, flush=True)
            return 128 + signum


def _command(cmd: str, argv: list[str]) -> int:
    quiet_process()
    from absl import app, flags, logging

    from seedkl_jax.errors import SeedKLError

    module = importlib.import_module(COMMANDS[cmd][0])
    prog = f"seedkl {cmd}"
    if any(a in HELP_FLAGS for a in argv[2:]):
        print(_command_help(module, prog))
        return EXIT_OK
    sys.argv[0] = prog

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.CantOpenFlagFileError as e:
            print(f"{prog}: error: {flagfile_problem(e)}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except flags.Error as e:  # unknown flag, bad value
            print(f"{prog}: error: {e}; see {prog} --help", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    def guarded(args):
        if not flags.FLAGS["verbosity"].present:  # orbax/XLA log every save step at INFO
            logging.set_verbosity(logging.WARNING)
        try:
            return module.main(args)
        except SeedKLError as e:  # bad input: one line, no traceback
            print(f"{prog}: error: {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    app.run(guarded, argv=[prog] + argv[2:], flags_parser=parse)
    return EXIT_OK


def flagfile_problem(e: Exception) -> str:
    """absl's "ERROR:: Unable to open flagfile: [Errno 2] No such file or directory: 'x'" as
    "--flagfile=x: cannot open it (No such file or directory); ..."."""
    text = re.sub(r"^ERROR::\s*Unable to open flagfile:\s*", "", str(e))
    m = re.search(r"\[Errno \d+\] (.*?): '(.*)'$", text)
    name, why = (m.group(2), m.group(1)) if m else ("FILE", text)
    return f"--flagfile={name}: cannot open it ({why}); give a readable file of --flag=value lines"


if __name__ == "__main__":
    sys.exit(main())
