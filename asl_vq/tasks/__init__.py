"""The experiments: each a `base.Task` for the shared loop (`asl_vq.train`)
and a `run(config, workdir)`; a config's `task` field names its module here.
"""

# config.task -> the module whose `run(config, workdir)` does it.
TASKS = {
    "tokenizer": "asl_vq.tasks.tokenizer_training",
    "tokenize": "asl_vq.tasks.dataset_tokenization",
    "seq2seq": "asl_vq.tasks.translation",
    "probe": "asl_vq.tasks.probing",
    "lm": "asl_vq.tasks.language_modeling",
}
