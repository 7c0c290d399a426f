"""launch/colab.ipynb runs headless, top to bottom, install cell included, in a fresh virtual
environment that holds Colab's older jax, flax and orbax-checkpoint: the install cell must
leave one consistent, newer jax, and the rest of the notebook then restores a tiny checkpoint,
generates from it and plots its curve."""

from __future__ import annotations

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


def test_the_colab_notebook_installs_over_an_older_jax_then_restores_generates_and_plots(
        tmp_path, tiny_run, monkeypatch):
    from conftest import REPO

    python = _colab_like_kernel(tmp_path, monkeypatch)
    assert _versions(python)["jax"] == "0.7.2"
    workdir = tmp_path / "gpt2_tiny"
    tiny_run(workdir, "--config.train.num_steps=4", "--config.train.eval_every=2",
             "--config.train.log_every=1")
    notebook = nbformat.read(REPO / "launch" / "colab.ipynb", as_version=4)
    parameters = next(cell for cell in notebook.cells if cell.source.startswith("# Parameters"))
    parameters.source = (f"WORKDIR = {str(workdir)!r}\nPACKAGE = {str(REPO)!r}\n"
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
    assert "'Return the" in text and "'The module" in text  # the greedy continuations
    # The curve is drawn from the run's metrics: a figure, and the steps it logged.
    assert any("image/png" in o.get("data", {}) for o in outputs)
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").open()]
    assert max(steps) == 4
