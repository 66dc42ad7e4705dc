"""The experiments: each a `base.Task` for the shared loop (`asl_vq.train`)
and a `run(config, workdir)`; a config's `task` field names its module here.
"""

# The experiments, by the one name each goes by: `config.task`, its module
# here (`asl_vq.tasks.<task>`, whose `run(config, workdir)` does it), its
# config (configs/<task>.py), its model (`asl_vq.models.<task>`, where it
# has its own) and its tests (tests/test_<task>.py).
TASKS = ("tokenizer", "tokenize", "translate", "probe", "lm")
