"""SQuAD v1.1 extractive question answering (BERT §4.2): start/end logits over the
`[CLS] question [SEP] context [SEP]` row (config.model.head='question_answering', a Dense(2)
as BertForQuestionAnswering's qa_outputs), scored by exact match and F1 after n-best span
decoding (textgen_jax.finetune.pipelines.best_answer_span; config.task.max_answer_length 30,
config.task.n_best 20).

  textgen-jax train --config configs/finetune/squad.py:bert-base \
    --config.init_from=runs/bert_base_hf --config.data.data_dir=gs://BUCKET/tfds \
    --workdir runs/bert_base_squad

Presets: bert, xlm (tiny) or bert-base, xlm-... (encoders only). BERT fine-tunes 2 epochs at
batch 32, lr 5e-5, sequences of 384 (§4.2), set here. One window per context: answers past
seq_len become the [CLS] (no answer) target.
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(arch: str = "bert-base") -> ml_collections.ConfigDict:
    config = finetune_config("squad", arch)
    if "-" in arch:  # a paper size
        config.data.seq_len = 384
        config.optim.lr = 5e-5
        config.train.num_steps = 5_500  # 2 epochs of 88k questions at batch 32
    return config
