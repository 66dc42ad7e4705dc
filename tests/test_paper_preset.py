"""The paper preset holds the reference's values, and the warm-up is its.

Every value below is written out as the reference (MichiganNLP/discrete_asl)
or the paper fixes it, with where; reverting any of them in
configs/tokenizer.py fails here. The BatchNorm momenta are module constants,
pinned per layer in tests/test_tokenizer.py.
"""

import numpy as np
import pytest

from asl_vq import config_lib
from asl_vq import optimizers
from asl_vq.models import features
from asl_vq.tasks import tokenizer as tokenizer_task

# (field, value, source). The project's own choices are marked as such.
REFERENCE = [
    ("model.dim", 128, "model.py: dimension=128"),
    ("model.num_heads", 4, "squeezeformer_blocks.py: 4 heads"),
    ("model.num_blocks", 6, "model.py: 6 blocks per stack"),
    ("model.kernel_size", 51, "squeezeformer_blocks.py: depthwise k=51"),
    ("model.dropout", 0.0, "model.py:119-122,202-205: every rate 0"),
    (
        "model.attention_window",
        0,
        "squeezeformer_blocks.py: attention over every frame",
    ),
    (
        "data.normalization",
        "sequence",
        "the reference's input: (v - mean) / std per sequence and axis",
    ),
    (
        "model.conv_bn_activation",
        "none",
        "main.py:165 / predict.py:99 convert_sync_batchnorm drops the SiLU",
    ),
    ("model.num_quantizers", 4, "main.py: n_q=4"),
    ("model.codebook_size", 1024, "main.py: bins=1024"),
    ("model.vq_decay", 0.99, "qt.py: decay=0.99"),
    ("model.kmeans_iters", 10, "qt.py: kmeans_iters=10"),
    ("model.dead_threshold", 2.0, "qt.py:452: threshold_ema_dead_code=2"),
    (
        "model.commit_grad",
        "first",
        "qt.py: residual from the straight-"
        "through output, only quantizer 1's term reaches the encoder",
    ),
    (
        "model.revival",
        "batch",
        "the project's (the reference's revival is "
        "a no-op: 'reference'); README departures",
    ),
    ("model.use_ctc", True, "main.py:93 CTC term"),
    ("train.optimizer", "schedule_free_adamw", "main.py:169"),
    ("train.learning_rate", 1e-3, "main.py:169 lr=1e-3"),
    (
        "train.warmup_epochs",
        50.0,
        "main.py:170 "
        "get_constant_schedule_with_warmup(50), stepped per epoch (main.py:111)",
    ),
    ("train.warmup_steps", 0, "no warm-up in updates"),
    ("train.grad_clip", 4.0, "main.py:108 clip_grad_norm_(4.0)"),
    ("train.weight_decay", 0.0, "schedulefree's default"),
    ("train.batch_size", 44, "main.py:263-266: 22 per GPU x 2"),
    ("train.num_epochs", 100, "paper section 5 (the script runs 200)"),
    ("train.bn_batches", 50, "main.py:47-49: 50 batches before each eval"),
    ("train.commit_weight", 1 / 16, "main.py: inv_weight = 16"),
    (
        "train.ctc_reduction",
        "mean_per_char",
        "main.py:63 nn.CTCLoss default reduction 'mean'",
    ),
    ("train.ctc_weight", 1.0, "main.py:95 loss += ctc"),
    (
        "train.quantizer_dropout",
        "batch",
        "qt.py q_dropout=True: one n_q a " "batch",
    ),
    ("data.flip_prob", 0.25, "main.py: flip_aug 0.25"),
    ("data.min_hand_frames", 15, "main.py / predict.py: min_seq_len 15"),
    ("data.max_len", 384, "predict.py:63 max_len 384 (training: 196)"),
]


@pytest.mark.parametrize(
    "field, value, source", REFERENCE, ids=[r[0] for r in REFERENCE]
)
def test_paper_preset_holds_the_reference_value(field, value, source):
  config = config_lib.load("tokenizer", "paper")
  section, name = field.split(".")
  got = config[section][name]
  assert got == value and type(got) is type(
      value
  ), f"{field} = {got!r}, the reference's is {value!r} ({source})"


def test_the_paper_preset_builds_the_reference_model():
  model = tokenizer_task.model_config(config_lib.load("tokenizer", "paper"))
  assert model.conv_bn_activation == "none"
  assert model.vq_eps == 1e-5  # qt.py: epsilon=1e-5
  assert features.STEM_BN_MOMENTUM == 0.05  # PyTorch 0.95 (model.py:17)
  assert features.CONV_BN_MOMENTUM == 0.9  # PyTorch 0.1 (model.py:20)


def _reference_learning_rates(peak, warmup, epochs, steps, dataset_len):
  """The learning rate of every update of the reference's loop (main.py):
  LambdaLR(get_constant_schedule_with_warmup) starts at lambda(0) = 0; after
  each update of batch ix in epoch e, scheduler.step(e + ix / dataset_len)
  sets peak * lambda(e + ix / dataset_len) for the next update."""
  lam = lambda s: s / max(1.0, warmup) if s < warmup else 1.0
  current, used = peak * lam(0), []
  for epoch in range(epochs):
    for ix in range(steps):
      used.append(current)
      current = peak * lam(epoch + ix / dataset_len)
  return np.array(used)


@pytest.mark.parametrize(
    "warmup, train_size, batch", [(50.0, 1000, 44), (3.0, 240, 24)]
)
def test_warmup_in_epochs_is_the_reference_schedule(warmup, train_size, batch):
  config = config_lib.load("tokenizer", "paper")
  config.train.warmup_epochs, config.train.batch_size = warmup, batch
  steps = train_size // batch
  epochs = int(warmup) + 2
  schedule = optimizers.learning_rate_schedule(config.train, train_size)
  got = np.array([float(schedule(c)) for c in range(epochs * steps)])
  expected = _reference_learning_rates(1e-3, warmup, epochs, steps, train_size)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)
  assert got[0] == 0 and got[-1] == pytest.approx(1e-3)


def test_both_warmups_set_is_refused():
  config = config_lib.load("tokenizer", "paper")
  config.train.warmup_steps = 100
  with pytest.raises(ValueError, match="set one of them"):
    optimizers.learning_rate_schedule(config.train, 1000)


def test_no_warmup_is_the_peak_rate_from_the_first_update():
  config = config_lib.load("tokenizer", "paper")
  config.train.warmup_epochs = 0.0
  schedule = optimizers.learning_rate_schedule(config.train, 1000)
  np.testing.assert_allclose(
      [float(schedule(c)) for c in (0, 1, 500)], 1e-3, rtol=1e-6
  )
