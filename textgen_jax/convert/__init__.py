"""Hugging Face `transformers` checkpoints in and out: `import_hf(src_dir)`, `export_hf(...)`.

The CLI's `import-hf` turns a checkpoint directory into a workdir (config, step-0 params, its
tokenizer) that train, eval, generate and fine-tuning use as if we had trained it; `export-hf`
writes a workdir's latest params back as a directory `from_pretrained` loads.
"""

from textgen_jax.convert.huggingface import (SUPPORTED, Imported, config_from_hf, export_hf,
                                             from_transformers, hf_config_from, import_hf,
                                             params_from_state_dict, read_state_dict,
                                             state_dict_from_params)

__all__ = ["SUPPORTED", "Imported", "config_from_hf", "export_hf", "from_transformers",
           "hf_config_from",
           "import_hf", "params_from_state_dict", "read_state_dict", "state_dict_from_params"]
