"""SQuAD extractive question answering (BERT §4.2-4.3): start/end logits over the
`[CLS] question [SEP] context [SEP]` rows (config.model.head='question_answering', a Dense(2)
as BertForQuestionAnswering's qa_outputs), scored by exact match and F1 after n-best span
decoding across a context's windows (textgen_jax.finetune.answers.best_answer).

A context longer than one row is read in overlapping windows, as BERT's run_squad.py:
config.task.doc_stride (128) tokens apart, the question cut to config.task.max_query_length
(64); each window's spans are scored and the best across the windows is the answer
(config.task.max_answer_length 30, config.task.n_best 20).

  textgen-jax train --config configs/finetune/squad.py:bert-base \
    --config.init_from=runs/bert_base_hf --config.data.data_dir=gs://BUCKET/tfds \
    --workdir runs/bert_base_squad
  textgen-jax train --config configs/finetune/squad.py:v2,bert-base ...   # SQuAD v2.0

Presets: [v2,]ARCH with ARCH bert, xlm (tiny) or bert-base, xlm-... (encoders only). BERT
fine-tunes v1.1 2 epochs at batch 32, lr 5e-5, sequences of 384 (§4.2), and v2.0 2 epochs at
batch 48, lr 5e-5 (§4.3), set here. v2.0 answers '' when the null score (the [CLS] position)
beats the best span's by more than config.task.null_score_diff_threshold (0.0; the reference
tunes it on the dev set).
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(preset: str = "bert-base") -> ml_collections.ConfigDict:
    version, _, arch = preset.rpartition(",")
    if version not in ("", "v1.1", "v2"):
        raise ValueError(f"unknown SQuAD version {version!r} in preset {preset!r}: use "
                         "ARCH, v1.1,ARCH or v2,ARCH.")
    config = finetune_config("squad_v2" if version == "v2" else "squad", arch)
    if "-" in arch:  # a paper size
        config.data.seq_len = 384
        config.optim.lr = 5e-5
        if version == "v2":  # 2 epochs of 130k questions at batch 48
            config.data.global_batch_size = 48
            config.train.num_steps = 5_400
        else:  # 2 epochs of 88k questions at batch 32
            config.train.num_steps = 5_500
    return config
