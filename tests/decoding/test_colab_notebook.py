"""launch/colab.ipynb runs headless, top to bottom, install cell included, in a fresh virtual
environment that holds Colab's older jax, flax and orbax-checkpoint: the install cell must
leave one consistent, newer jax, and the rest of the notebook then restores a tiny checkpoint
from a gs:// workdir (a stand-in GCS server), generates from it and plots its curve, as the
CLI does from the same workdir."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import nbclient
import nbformat

# What Colab preinstalls (2026-11): jax/jaxlib 0.7.2, flax 0.11.2, orbax-checkpoint 0.12.4;
# ipykernel and matplotlib run the notebook itself.
COLAB_PACKAGES = ("jax==0.7.2", "jaxlib==0.7.2", "flax==0.11.2", "orbax-checkpoint==0.12.4",
                  "ipykernel", "matplotlib")


def _colab_like_kernel(tmp_path, monkeypatch) -> str:
    """A venv with Colab's packages, registered as a Jupyter kernel; returns its python."""
    venv = tmp_path / "colab_venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", *COLAB_PACKAGES], check=True,
                   timeout=1200, capture_output=True)
    kernel = tmp_path / "jupyter" / "kernels" / "colab"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return python


def _versions(python: str) -> dict[str, str]:
    code = "import jax, jaxlib, flax; print(jax.__version__, jaxlib.__version__, flax.__version__)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    return dict(zip(("jax", "jaxlib", "flax"), out))


def _train_on_gs(workdir: str, tokenizer, data_dir: str, tmp_path) -> None:
    """A tiny GPT-2 trained by the CLI straight into a gs:// workdir."""
    from conftest import REPO, cli_command, cli_env, train_flags

    local = tmp_path / "tokenizer.model"
    tokenizer.save(local)
    upload = ("import sys; from etils import epath; "
              "epath.Path(sys.argv[1]).write_bytes(epath.Path(sys.argv[2]).read_bytes())")
    subprocess.run([sys.executable, "-c", upload, f"{workdir}/tokenizer.model", str(local)],
                   env=cli_env(), check=True, timeout=120)
    subprocess.run(cli_command("train", workdir, *train_flags(data_dir),
                               "--config.train.num_steps=4", "--config.train.eval_every=2",
                               "--config.train.log_every=1"),
                   env=cli_env(), cwd=REPO, check=True, capture_output=True, timeout=600)


def test_the_colab_notebook_installs_over_an_older_jax_then_restores_generates_and_plots(
        tmp_path, monkeypatch, fake_gcs, stdlib_tokenizer, stdlib_data_dir):
    from conftest import REPO, cli_command, cli_env

    python = _colab_like_kernel(tmp_path, monkeypatch)
    assert _versions(python)["jax"] == "0.7.2"
    workdir = "gs://bucket/gpt2_tiny"
    _train_on_gs(workdir, stdlib_tokenizer, stdlib_data_dir, tmp_path)
    notebook = nbformat.read(REPO / "launch" / "colab.ipynb", as_version=4)
    parameters = next(cell for cell in notebook.cells if cell.source.startswith("# Parameters"))
    parameters.source = (f"WORKDIR = {workdir!r}\nPACKAGE = {str(REPO)!r}\n"
                         "PROMPTS = ['Return the', 'The module']")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws PNGs
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the kernel imports what the cell installs
    nbclient.NotebookClient(notebook, timeout=1200, kernel_name="colab",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # One resolution: jax and jaxlib of one version, newer than Colab's, and the kernel that
    # restores the checkpoint imports exactly that jax, without a restart.
    after = _versions(python)
    assert after["jax"] == after["jaxlib"] != "0.7.2" and after["flax"] != "0.11.2"
    installed = re.search(r"textgen_jax\[cpu\]: jax (\S+), jaxlib (\S+),", text)
    assert installed and installed.groups() == (after["jax"], after["jaxlib"])
    assert "jax runs on cpu" in text and "Ready: no restart needed." in text
    assert f"gpt2: 2 layers x 64, restored by jax {after['jax']} on" in text
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    greedy_cell = next(cell for cell in notebook.cells if cell.source.startswith("greedy ="))
    greedy_lines = "".join(o.get("text", "") for o in greedy_cell.outputs).splitlines()
    greedy = [ast.literal_eval(line) for line in greedy_lines[:2]]  # repr() of each text
    assert greedy[0].startswith("Return the") and greedy[1].startswith("The module")
    # The curve is drawn from the run's metrics, read from gs://: a figure.
    assert any("image/png" in o.get("data", {}) for o in outputs)
    # The CLI restores the same gs:// checkpoint and decodes the same greedy continuation.
    cli = subprocess.run(cli_command("generate", workdir, "--prompt=Return the",
                                     "--max_new_tokens=32", "--temperature=0"),
                         env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-3000:]
    continuation = greedy[0][len("Return the"):]
    assert " ".join(continuation.split()) in " ".join(cli.stdout.split())
