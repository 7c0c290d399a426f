"""`textgen-jax COMMAND --workdir DIR [options]`; `textgen-jax --help` lists the commands and
`textgen-jax COMMAND --help` one command's options.

The CLI only parses and dispatches; everything it runs is a library function.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

# Each command with the one line that `textgen-jax --help` prints for it.
COMMANDS: dict[str, str] = {
    "train": "Train (or resume) the --config model in --workdir: pretraining or fine-tuning.",
    "eval": "Validation loss and perplexity of the workdir's latest checkpoint.",
    "generate": "Continue each --prompt (BART, XLM translation: rewrite it) with the model.",
    "fill-mask": "The likeliest fillers of each <mask> in --text (BERT, XLM's masked LM).",
    "import-hf": "Make a workdir from a Hugging Face transformers checkpoint directory SRC_DIR.",
    "export-hf": "Write the workdir as a transformers checkpoint directory --out.",
}
EVERY_COMMAND = tuple(COMMANDS)
POSITIONAL_ARGUMENTS = {"import-hf": "SRC_DIR"}
USES_WORKDIR_CONFIG = ("eval", "generate", "fill-mask", "export-hf")  # no --config of their own
HELP_ARGUMENTS = ("-h", "--help", "-help", "--helpshort", "-?")

# flag name -> the commands it applies to; filled by _for beside each definition, so a new flag
# cannot be defined without it. `COMMAND --help` lists these, and other commands refuse it.
FLAG_COMMANDS: dict[str, tuple[str, ...]] = {}
# The flags a command cannot run without, each with an example value for the error message.
REQUIRED_FLAGS: dict[str, dict[str, str]] = {
    "train": {"config": "configs/gpt2.py:tiny"},
    "generate": {"prompt": '"Return the"'},
    "fill-mask": {"text": '"Return the <mask>."'},
    "export-hf": {"out": "DIR"},
}
# (command, flag) -> that command's default where it differs from the flag's own.
COMMAND_DEFAULTS: dict[tuple[str, str], Any] = {("fill-mask", "top_k"): 5}


def _for(commands: tuple[str, ...], holder: flags.FlagHolder) -> flags.FlagHolder:
    """Tags the flag just defined with the commands it applies to."""
    FLAG_COMMANDS[holder.name] = commands
    return holder


_for(("train",), config_flags.DEFINE_config_file(
    "config", None, "Config file and preset, e.g. configs/gpt2.py:tiny; then "
    "--config.KEY=VALUE overrides any field (e.g. --config.optim.lr=3e-4; unknown keys are "
    "errors).", lock_config=True))
_for(EVERY_COMMAND, flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, tokenizer, config and metrics."))
_for(("generate",), flags.DEFINE_multi_string(
    "prompt", [], "Prompt(s) to continue"))
_for(("generate",), flags.DEFINE_integer("max_new_tokens", 48, "Tokens to generate per prompt."))
_for(("generate",), flags.DEFINE_float("temperature", 0.8, "Sampling temperature; 0 = greedy."))
_for(("generate", "fill-mask"), flags.DEFINE_integer(
    "top_k", 40, "generate: sample among the k most likely tokens, 0 = all; fill-mask: "
    "candidates listed per <mask>."))
_for(("fill-mask",), flags.DEFINE_string("text", None, "Text with <mask> tokens to fill in."))
_for(("generate",), flags.DEFINE_integer("seed", 0, "Sampling seed."))
_for(("generate",), flags.DEFINE_float(
    "top_p", 1.0, "Sample among the most likely tokens holding this much probability; 1 = all."))
_for(("generate",), flags.DEFINE_integer(
    "min_new_tokens", 0, "No end of sequence before this many new tokens."))
_for(("generate",), flags.DEFINE_float(
    "repetition_penalty", 1.0, "Above 1 discourages tokens already present."))
_for(("generate",), flags.DEFINE_integer(
    "no_repeat_ngram_size", 0, "Never repeat an n-gram of this size; 0 = off."))
_for(("generate",), flags.DEFINE_integer(
    "num_beams", 1, "Beam search with this many beams; 1 = off."))
_for(("generate",), flags.DEFINE_float(
    "length_penalty", 1.0, "Beam scores are divided by length ** this."))
_for(("generate",), flags.DEFINE_enum(
    "early_stopping", "false", ["true", "false", "never"],
    "Beam search stopping rule, as in transformers."))
_for(("generate", "fill-mask"), flags.DEFINE_string(
    "language", "", "An XLM model's language ('' = its first, or its translation task's)."))
_for(("import-hf",), flags.DEFINE_bool(
    "allow_pickle", False, "Read a pickled pytorch_model.bin (it can run code when read; needs "
    "torch; also spelled --allow-pickle). model.safetensors needs neither."))
_for(("import-hf",), flags.DEFINE_string(
    "tokenizer", "", "A tokenizer.json or sentencepiece .model, when SRC_DIR has no "
    "tokenizer.json."))
_for(("export-hf",), flags.DEFINE_string(
    "out", None, "The directory to write (config.json, model.safetensors, tokenizer.json)."))
_for(EVERY_COMMAND, flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Join a multi-process run: auto = when a coordinator or several processes are named, or a "
    "SLURM job / TPU pod of several hosts is detected; on = always (JAX detects the cluster); "
    "off = never."))
_for(EVERY_COMMAND, flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordinator (default "
    "$JAX_COORDINATOR_ADDRESS)."))
_for(EVERY_COMMAND, flags.DEFINE_integer(
    "num_processes", None, "Processes in the run (default $JAX_NUM_PROCESSES)."))
_for(EVERY_COMMAND, flags.DEFINE_integer(
    "process_id", None, "This process's id, 0 .. num_processes-1 (default $JAX_PROCESS_ID)."))
_for(EVERY_COMMAND, flags.DEFINE_integer(
    "distributed_timeout", 300, "Seconds to wait for all processes to join."))
_for(EVERY_COMMAND, flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds after which a silent (dead) process makes the others "
    "exit with an error."))

FLAGS = flags.FLAGS


def _usage(command: str) -> str:
    """One command's synopsis line."""
    positional = f" {POSITIONAL_ARGUMENTS[command]}" if command in POSITIONAL_ARGUMENTS else ""
    required = "".join(f" --{name}={example}"
                       for name, example in REQUIRED_FLAGS.get(command, {}).items())
    overrides = " [--config.KEY=VALUE ...]" if "config" in REQUIRED_FLAGS.get(command, {}) else ""
    return f"textgen-jax {command}{positional} --workdir=DIR{required}{overrides} [options]"


def general_help() -> str:
    """`textgen-jax --help`: every command with its one line."""
    width = max(map(len, COMMANDS))
    lines = ["usage: textgen-jax COMMAND --workdir=DIR [options]", "", "commands:"]
    lines += [f"  {command:<{width}}  {summary}" for command, summary in COMMANDS.items()]
    lines += ["", "train takes --config=FILE:PRESET [--config.KEY=VALUE ...]; the others use the "
              "workdir's own config.", "`textgen-jax COMMAND --help` lists that command's options."]
    return "\n".join(lines)


def _default(command: str, name: str) -> str:
    if name in REQUIRED_FLAGS.get(command, {}) or name == "workdir":
        return "required"
    value = COMMAND_DEFAULTS.get((command, name), FLAGS[name].default)
    return "no default" if value is None else f"default: {value!r}"


def command_help(command: str) -> str:
    """`textgen-jax COMMAND --help`: the command's line, synopsis and options with defaults."""
    own = [name for name, commands in FLAG_COMMANDS.items()
           if command in commands and commands != EVERY_COMMAND]
    shared = [name for name, commands in FLAG_COMMANDS.items() if commands == EVERY_COMMAND]
    lines = [f"usage: {_usage(command)}", "", COMMANDS[command]]
    if command in USES_WORKDIR_CONFIG:
        lines.append("The config is the workdir's own (its config.json).")
    for title, names in ((f"{command} options", own), ("options of every command", shared)):
        if names:
            lines += ["", f"{title}:"]
        for name in names:
            lines.append(f"  --{name} ({_default(command, name)})")
            lines += textwrap.wrap(" ".join(FLAGS[name].help.split()), 96,
                                   initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def _usage_error(message: str) -> None:
    print(f"textgen-jax: {message}\n{general_help()}", file=sys.stderr)
    sys.exit(2)


def _unknown_command(command: str) -> None:
    _usage_error(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")


def _print_help_if_asked(arguments: list[str]) -> None:
    """Prints the help and exits 0 for `help [COMMAND]`, `--help`, `-h`, `COMMAND --help`."""
    asked = arguments[:1] == ["help"] or any(arg in HELP_ARGUMENTS for arg in arguments)
    if not asked:
        return
    rest = arguments[1:] if arguments[:1] == ["help"] else arguments
    command = rest[0] if rest and not rest[0].startswith("-") else None
    if command is not None and command not in COMMANDS:
        _unknown_command(command)
    print(general_help() if command is None else command_help(command))
    sys.exit(0)


def _parse_flags(argv: list[str]) -> list[str]:
    _print_help_if_asked(argv[1:])  # absl's own --help prints a bare usage line and exits 1
    # The spelling of `transformers` and of the docs; absl flags are spelled with underscores.
    argv = [{"--allow-pickle": "--allow_pickle"}.get(arg, arg) for arg in argv]
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError) as error:
        # ml_collections raises these, not a flags.Error, for a --config.KEY naming no field;
        # the innermost message reads "'lrr'\nDid you mean "lr" instead of "lrr"?".
        while error.args and isinstance(error.args[0], BaseException):
            error = error.args[0]
        detail = str(error.args[0] if error.args else error).replace("\n", "; ")
        _usage_error(f"unknown config key {detail} (--config.KEY must name a field of the "
                     "config file; see textgen_jax/config.py)")
        raise  # unreachable: _usage_error exits
    except flags.IllegalFlagValueError as error:
        # A config file's get_config raised (an unknown preset names its choices): its message.
        cause = error.__cause__ or error.__context__ or error
        while (cause.__cause__ or cause.__context__) is not None:
            cause = cause.__cause__ or cause.__context__
        _usage_error(f"{' '.join(str(cause).split())}")
        raise  # unreachable: _usage_error exits


def _check_arguments(argv: list[str]) -> str:
    """The command named by the parsed argv, after checking its arguments and flags."""
    if len(argv) < 2:
        _usage_error("no command given")
    command = argv[1]
    if command not in COMMANDS:
        _unknown_command(command)
    expected = 3 if command in POSITIONAL_ARGUMENTS else 2
    if len(argv) != expected:
        _usage_error(f"{command} takes {expected - 2} argument(s), got {argv[2:]}; usage: "
                     f"{_usage(command)}")
    stray = [name for name, commands in FLAG_COMMANDS.items()
             if FLAGS[name].present and command not in commands]
    if stray:
        _usage_error(f"--{stray[0]} does not apply to {command}; `textgen-jax {command} --help` "
                     "lists its options")
    for name, example in {"workdir": "DIR", **REQUIRED_FLAGS.get(command, {})}.items():
        if not FLAGS[name].value:
            _usage_error(f"{command} needs --{name}, e.g. --{name}={example}")
    return command


def _main(argv: list[str]) -> None:
    command = _check_arguments(argv)
    # Imported here, after parsing, so that help and usage errors answer without loading JAX.
    from textgen_jax import distributed
    from textgen_jax.config import ConfigError
    try:
        distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id, FLAGS.distributed_timeout,
                               FLAGS.heartbeat_timeout)
        if command == "train":
            from textgen_jax.training import loop
            loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        elif command == "eval":
            import textgen_jax
            result = textgen_jax.evaluate(FLAGS.workdir)
            print(" | ".join(f"{name} {value:.4f}" for name, value in result.items()))
        elif command == "generate":
            _generate(FLAGS.workdir)
        elif command == "fill-mask":
            _fill_mask(FLAGS.workdir)
        elif command == "import-hf":
            from textgen_jax.convert.workdir import import_to_workdir
            import_to_workdir(argv[2], FLAGS.workdir, allow_pickle=FLAGS.allow_pickle,
                              tokenizer=FLAGS.tokenizer)
            print(f"wrote {FLAGS.workdir}: train, eval, generate and fine-tune it as any workdir")
        elif command == "export-hf":
            from textgen_jax.convert.workdir import export_workdir
            export_workdir(FLAGS.workdir, FLAGS.out)
            print(f"wrote {FLAGS.out}: load it with transformers' from_pretrained")
    except (ConfigError, OSError, ValueError) as error:  # OSError: a file or a failed write
        print(f"textgen-jax {command}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except RuntimeError as error:  # jax.errors.JaxRuntimeError: a collective lost its peer
        distributed.exit_on_lost_process(command, error)
        raise


def _generate(workdir: str) -> None:
    """Prints each prompt's generation; a single prompt's streams token by token."""
    import textgen_jax

    loaded = textgen_jax.load(workdir)
    stream = None
    if len(FLAGS.prompt) == 1 and FLAGS.num_beams == 1:
        stream = lambda piece: print(piece, end="", flush=True)  # noqa: E731
    texts = textgen_jax.generate(
        loaded, FLAGS.prompt, FLAGS.max_new_tokens, FLAGS.temperature, FLAGS.top_k, FLAGS.seed,
        top_p=FLAGS.top_p, min_new_tokens=FLAGS.min_new_tokens,
        repetition_penalty=FLAGS.repetition_penalty,
        no_repeat_ngram_size=FLAGS.no_repeat_ngram_size, num_beams=FLAGS.num_beams,
        length_penalty=FLAGS.length_penalty,
        early_stopping={"true": True, "false": False}.get(FLAGS.early_stopping, "never"),
        language=FLAGS.language, stream=stream)
    if stream is not None:
        print()
        return
    for index, text in enumerate(texts):
        if len(texts) > 1:  # samples hold newlines: mark where each one starts
            print(f"--- sample {index + 1} of {len(texts)} ---")
        print(text)


def _fill_mask(workdir: str) -> None:
    """Prints the top-k fillers of each <mask> of --text, one line per mask."""
    import textgen_jax

    top_k = FLAGS.top_k if FLAGS["top_k"].present else COMMAND_DEFAULTS[("fill-mask", "top_k")]
    fillers = textgen_jax.fill_mask(workdir, FLAGS.text, top_k, FLAGS.language)
    for index, candidates in enumerate(fillers):
        print(f"<mask> {index + 1}: " + " | ".join(f"{text!r} {probability:.3f}"
                                                   for text, probability in candidates))


def main() -> None:
    # Library INFO logs (Orbax, TFDS) would drown the one progress line per log step.
    logging.set_verbosity(logging.WARNING)
    app.run(_main, flags_parser=_parse_flags)


if __name__ == "__main__":
    main()
