"""launch/colab.ipynb runs headless, top to bottom, against a tiny checkpoint."""

from __future__ import annotations

import json

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")


def test_the_colab_notebook_restores_generates_and_plots(tmp_path, tiny_run, monkeypatch):
    from conftest import REPO

    workdir = tmp_path / "gpt2_tiny"
    tiny_run(workdir, "--config.train.num_steps=4", "--config.train.eval_every=2",
             "--config.train.log_every=1")
    notebook = nbformat.read(REPO / "launch" / "colab.ipynb", as_version=4)
    parameters = next(cell for cell in notebook.cells if cell.source.startswith("# Parameters"))
    parameters.source = (f"WORKDIR = {str(workdir)!r}\nPACKAGE = {str(REPO)!r}\n"
                         "PROMPTS = ['Return the', 'The module']")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws PNGs
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "gpt2: 2 layers x 64" in text
    assert "'Return the" in text and "'The module" in text  # the greedy continuations
    # The curve is drawn from the run's metrics: a figure, and the steps it logged.
    assert any("image/png" in o.get("data", {}) for o in outputs)
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").open()]
    assert max(steps) == 4
