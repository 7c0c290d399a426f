"""`textgen-jax COMMAND --config FILE:PRESET --workdir DIR [--config.a.b=v ...]`.

The CLI only parses and dispatches; everything it runs is a library function.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

COMMANDS = ("train", "eval", "generate", "fill-mask", "import-hf", "export-hf")

config_flags.DEFINE_config_file(
    "config", None, "Config file and preset, e.g. configs/gpt2.py:tiny.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, tokenizer and metrics.")
flags.DEFINE_multi_string("prompt", [], "Prompt(s) to continue (generate).")
flags.DEFINE_integer("max_new_tokens", 48, "Tokens to sample per prompt (generate).")
flags.DEFINE_float("temperature", 0.8, "Sampling temperature; 0 = greedy (generate).")
flags.DEFINE_integer("top_k", 40, "Sample among the k most likely tokens; 0 = all (generate); "
                     "candidates per <mask> (fill-mask, default 5).")
flags.DEFINE_string("text", None, 'Text with <mask> tokens to fill in (fill-mask).')
flags.DEFINE_integer("seed", 0, "Sampling seed (generate).")
flags.DEFINE_float("top_p", 1.0, "Sample among the most likely tokens holding this much "
                   "probability; 1 = all (generate).")
flags.DEFINE_integer("min_new_tokens", 0, "No EOS before this many new tokens (generate).")
flags.DEFINE_float("repetition_penalty", 1.0, "Above 1 discourages tokens already present "
                   "(generate).")
flags.DEFINE_integer("no_repeat_ngram_size", 0, "Never repeat an n-gram of this size; 0 = off "
                     "(generate).")
flags.DEFINE_integer("num_beams", 1, "Beam search with this many beams; 1 = off (generate).")
flags.DEFINE_float("length_penalty", 1.0, "Beam scores are divided by length ** this "
                   "(generate).")
flags.DEFINE_enum("early_stopping", "false", ["true", "false", "never"],
                  "Beam search stopping rule, as in transformers (generate).")
flags.DEFINE_string("language", "", "An XLM model's language (generate, fill-mask).")
flags.DEFINE_bool("allow_pickle", False, "import-hf: read a pickled pytorch_model.bin (it can "
                  "run code when read; needs torch). model.safetensors needs neither.")
flags.DEFINE_string("tokenizer", "", "import-hf: a tokenizer.json or sentencepiece .model, when "
                    "SRC_DIR has no tokenizer.json.")
flags.DEFINE_string("out", None, "export-hf: the directory to write (config.json, "
                    "model.safetensors, tokenizer.json).")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Join a multi-process run: auto = when a coordinator or several processes are "
                  "named, or a SLURM job / TPU pod of several hosts is detected; on = always "
                  "(JAX detects the cluster); off = never.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0's coordinator "
                    "(default $JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (default $JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's id, 0 .. num_processes-1 (default "
                     "$JAX_PROCESS_ID).")
flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for all processes to join.")
flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds after which a silent (dead) process "
                     "makes the others exit with an error.")

FLAGS = flags.FLAGS


def _usage_error(message: str) -> None:
    print(f"textgen-jax: {message}\nusage: textgen-jax {{{'|'.join(COMMANDS)}}} "
          "--workdir DIR [--config configs/ARCH.py:PRESET] [--config.KEY=VALUE ...]",
          file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
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


def _main(argv: list[str]) -> None:
    from textgen_jax.config import ConfigError

    command = argv[1] if len(argv) > 1 else ""
    arguments = 3 if command == "import-hf" else 2  # import-hf SRC_DIR
    if len(argv) != arguments or command not in COMMANDS:
        _usage_error(f"expected one command from {COMMANDS} (import-hf takes SRC_DIR), got "
                     f"{argv[1:]}")
    if not FLAGS.workdir:
        _usage_error("--workdir is required")
    try:
        from textgen_jax import distributed
        distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id, FLAGS.distributed_timeout,
                               FLAGS.heartbeat_timeout)
        if command == "train":
            from textgen_jax.training import loop
            if FLAGS.config is None:
                _usage_error("train needs --config, e.g. --config configs/gpt2.py:tiny")
            loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        elif command == "eval":
            _evaluate(FLAGS.workdir)
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
            if not FLAGS.out:
                _usage_error("export-hf needs --out DIR")
            export_workdir(FLAGS.workdir, FLAGS.out)
            print(f"wrote {FLAGS.out}: load it with transformers' from_pretrained")
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"textgen-jax {command}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except RuntimeError as error:  # jax.errors.JaxRuntimeError: a collective lost its peer
        from textgen_jax import distributed
        distributed.exit_on_lost_process(command, error)
        raise


def _generate(workdir: str) -> None:
    """Prints each prompt's generation; a single prompt's streams token by token."""
    import textgen_jax

    if not FLAGS.prompt:
        _usage_error('generate needs --prompt "..."')
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
    from textgen_jax.decoding import fill_mask

    if not FLAGS.text:
        _usage_error('fill-mask needs --text "... <mask> ..."')
    top_k = FLAGS.top_k if FLAGS["top_k"].present else 5
    fillers = fill_mask(textgen_jax.load(workdir), FLAGS.text, top_k)
    for index, candidates in enumerate(fillers):
        print(f"<mask> {index + 1}: " + " | ".join(f"{text!r} {probability:.3f}"
                                                   for text, probability in candidates))


def _evaluate(workdir: str) -> None:
    """Validation loss and perplexity of the latest checkpoint, on this process's devices."""
    import jax
    import textgen_jax
    from textgen_jax import objectives
    from textgen_jax.training import loop, partitioning, steps

    loaded = textgen_jax.load(workdir)
    config = loaded.config
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    mesh = partitioning.make_mesh(config.mesh)
    eval_step = jax.jit(steps.make_eval_step(loaded.model,
                                             objectives.objective_for(config).loss_fn))
    with steps.activate(mesh):
        result = loop.evaluate(eval_step, loaded.params, config, loaded.tokenizer, mesh)
    print(" | ".join(f"{name} {value:.4f}" for name, value in result.items()))


def main() -> None:
    # Library INFO logs (Orbax, TFDS) would drown the one progress line per log step.
    logging.set_verbosity(logging.WARNING)
    app.run(_main, flags_parser=_parse_flags)


if __name__ == "__main__":
    main()
