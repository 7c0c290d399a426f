"""The real CLI in fresh processes: help, sampling, evaluation, SIGTERM, and clear errors on bad
input."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import pytest

import textgen_jax
import tolerances
from textgen_jax import cli
from conftest import (REPO, cli_command, cli_env, read_metrics, train_flags,
                      train_tiny_workdir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, stdlib_data_dir, stdlib_tokenizer):
    return train_tiny_workdir(tmp_path_factory.mktemp("trained"), stdlib_data_dir,
                              stdlib_tokenizer, "--config.train.num_steps=30",
                              "--config.train.eval_every=30", "--config.train.checkpoint_every=30")


def _generate(workdir, *flags):
    result = subprocess.run(cli_command("generate", workdir, *flags), env=cli_env(), cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_greedy_generate_equals_argmax_of_the_restored_model(trained):
    lines = _generate(trained, "--prompt=Return the", "--max_new_tokens=6", "--temperature=0")
    model, params, tokenizer, _ = textgen_jax.load(str(trained))
    ids = [tokenizer.bos_id] + tokenizer.encode("Return the")
    for _ in range(6):  # greedy by full recomputation, one token at a time
        logits = model.apply({"params": params}, {"inputs": jnp.asarray([ids])})["logits"]
        ids.append(int(jnp.argmax(logits[0, -1])))
    assert lines == tokenizer.decode(ids[1:]) + "\n"


def test_sampling_is_deterministic_from_the_seed(trained):
    flags = ("--prompt=The module", "--prompt=Return", "--max_new_tokens=8", "--top_k=5")
    first = _generate(trained, *flags, "--seed=1")
    assert first.startswith("--- sample 1 of 2 ---\nThe module")
    assert "\n--- sample 2 of 2 ---\nReturn" in first
    assert _generate(trained, *flags, "--seed=1") == first
    assert any(_generate(trained, *flags, f"--seed={seed}") != first for seed in (2, 3, 4))


def test_sigterm_saves_then_exits_zero_and_resumes_there(tmp_path, stdlib_data_dir,
                                                         stdlib_tokenizer, tiny_run):
    workdir = tmp_path / "preempted"
    workdir.mkdir()
    stdlib_tokenizer.save(workdir / "tokenizer.model")
    flags = (*train_flags(stdlib_data_dir), "--config.train.num_steps=100000",
             "--config.train.log_every=1", "--config.train.checkpoint_every=100000")
    process = subprocess.Popen(cli_command("train", workdir, *flags), env=cli_env(), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (workdir / "metrics.jsonl").exists() and max(read_metrics(workdir), default=0) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    saved = re.search(r"SIGTERM: saving the checkpoint at step (\d+)", stdout)
    assert saved, stdout[-2000:]
    step = int(saved.group(1))
    assert step >= 3 and (workdir / "checkpoints" / str(step)).is_dir()
    resumed = tiny_run(workdir, f"--config.train.num_steps={step + 2}")
    assert f"resumed from the checkpoint at step {step}" in resumed.stdout


def _fails_clearly(run, *expected: str):
    assert run.returncode == 1, run.stderr[-3000:]
    message = run.stderr.strip().splitlines()[-1]
    for text in expected:
        assert text in message, message
    return message


def test_bad_text_files_name_the_file(tmp_path, tiny_run):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait, a fine drink.\n".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for path, reason in ((latin1, "UTF-8"), (empty, "empty")):
        workdir = tmp_path / f"run_{path.stem}"
        run = tiny_run(workdir, "--config.data.dataset=", f"--config.data.files={path}",
                       check=False)
        _fails_clearly(run, str(path), reason)
        assert not (workdir / "checkpoints").exists()


def test_unknown_tfds_dataset_is_named(tmp_path, tiny_run):
    workdir = tmp_path / "unknown"
    run = tiny_run(workdir, "--config.data.dataset=no_such_corpus", check=False)
    (workdir / "tokenizer.model").unlink()
    _fails_clearly(run, "no_such_corpus")


@pytest.mark.parametrize("flags, num_devices, expected", [
    (("--config.mesh.data=3",), 1, ("config.mesh", "3")),
    (("--config.mesh.data=2", "--config.mesh.tensor=4", "--config.model.num_heads=2",
      "--config.model.d_model=64"), 8, ("config.mesh.tensor=4", "num_heads=2")),
    (("--config.data.global_batch_size=12",), 8, ("global_batch_size=12", "8")),
])
def test_mesh_and_batch_errors_name_the_values(tmp_path, tiny_run, flags, num_devices, expected):
    run = tiny_run(tmp_path / "mesh", *flags, num_devices=num_devices, check=False)
    _fails_clearly(run, *expected)


def test_workdir_of_another_size_is_refused_and_kept(trained, tiny_run):
    before = sorted(p.name for p in (trained / "checkpoints").iterdir())
    config_before = (trained / "config.json").read_text()
    run = tiny_run(trained, "--config.model.d_model=32", "--config.train.num_steps=40",
                   check=False)
    _fails_clearly(run, "config.model.d_model", "64", "32")
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == before
    assert (trained / "config.json").read_text() == config_before


def _cli_run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textgen_jax.cli", *arguments], env=cli_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def _main_exit(monkeypatch, capsys, *arguments: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of cli.main() in this process; only for arguments that exit
    before the flags are parsed (absl's parsed flags are process-wide state)."""
    monkeypatch.setattr("sys.argv", ["textgen-jax", *arguments])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_help_lists_every_command_with_its_line():
    run = _cli_run("--help")  # a fresh process: absl's own --help (exit 1) must not answer
    assert run.returncode == 0, run.stderr[-3000:]
    for command, summary in cli.COMMANDS.items():
        assert re.search(rf"^  {re.escape(command)} +{re.escape(summary)}$", run.stdout,
                         re.MULTILINE), run.stdout


@pytest.mark.parametrize("arguments", [("-h",), ("help",)])
def test_short_help_and_help_command_print_the_same(monkeypatch, capsys, arguments):
    code, out, _ = _main_exit(monkeypatch, capsys, *arguments)
    assert code == 0
    assert out == cli.general_help() + "\n"


def test_import_hf_help_lists_its_own_options_only():
    run = _cli_run("import-hf", "--help")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("usage: textgen-jax import-hf SRC_DIR --workdir=DIR")
    assert "\n  --allow_pickle (default: False)\n" in run.stdout
    assert "\n  --tokenizer (default: '')\n" in run.stdout
    assert "--num_beams" not in run.stdout and "--prompt" not in run.stdout


def test_command_help_shows_defaults_per_command(monkeypatch, capsys):
    code, out, _ = _main_exit(monkeypatch, capsys, "generate", "--help")
    assert code == 0
    assert "\n  --max_new_tokens (default: 48)\n      Tokens to generate" in out
    assert "\n  --top_k (default: 40)\n" in out
    code, out, _ = _main_exit(monkeypatch, capsys, "help", "fill-mask")
    assert code == 0
    assert "\n  --top_k (default: 5)\n" in out and "\n  --text (required)\n" in out
    code, out, _ = _main_exit(monkeypatch, capsys, "train", "-h")
    assert code == 0
    assert "--config.KEY=VALUE" in out and "--workdir" in out and "--num_beams" not in out


def test_every_flag_is_tagged_and_listed_by_exactly_its_commands(monkeypatch, capsys):
    defined = {flag.name for flag in cli.FLAGS.get_flags_for_module(cli)}
    defined.add("config")  # config_flags registers it under its own module
    assert defined == set(cli.FLAG_COMMANDS)
    for command in cli.COMMANDS:
        _, out, _ = _main_exit(monkeypatch, capsys, command, "--help")
        listed = set(re.findall(r"^  --(\w+) \(", out, re.MULTILINE))
        assert listed == {name for name, commands in cli.FLAG_COMMANDS.items()
                          if command in commands}, command


@pytest.mark.parametrize("arguments", [("trian", "--workdir=w"), ("help", "trian"),
                                       ("trian", "--help")])
def test_an_unknown_command_is_named_with_the_commands(monkeypatch, capsys, arguments):
    code, out, err = _main_exit(monkeypatch, capsys, *arguments)
    assert code == 2 and not out
    assert "unknown command 'trian'" in err and ", ".join(cli.COMMANDS) in err


def test_a_flag_of_another_command_or_a_missing_one_is_a_usage_error(tmp_path):
    workdir = tmp_path / "w"
    run = _cli_run("import-hf", str(tmp_path), f"--workdir={workdir}", "--num_beams=2")
    assert run.returncode == 2
    assert "--num_beams does not apply to import-hf" in run.stderr
    assert not workdir.exists()
    run = _cli_run("generate", f"--workdir={workdir}", "--max_new_tokens=3")
    assert run.returncode == 2
    assert "generate needs --prompt" in run.stderr and "Traceback" not in run.stderr


def test_evaluate_matches_the_training_loops_eval_and_keeps_the_config(trained):
    loaded = textgen_jax.load(str(trained))
    mesh_before = loaded.config.mesh.to_dict()
    result = textgen_jax.evaluate(loaded)
    # The loop's eval step and this one are the same function, jitted with and without the
    # (one-device) shardings: at most summed in another order, the longest float32 reduction
    # <= 1024 terms (the vocabulary's softmax, the eval batches' tokens).
    logged = read_metrics(trained, "eval")[30]["loss"]
    assert result["loss"] == pytest.approx(logged, rel=tolerances.reordered_sum(1024))
    assert result["perplexity"] == math.exp(result["loss"])  # float64 exp of one float: bitwise
    assert loaded.config.mesh.to_dict() == mesh_before
