r"""The token analyses (see `asl_vq.analysis.analyze`) as a command.

  python -m asl_vq.analysis \
      --tokens=runs/table2/tokens_rvq,runs/table2/tokens_rvq_ctc \
      --names=RVQ,RVQ+CTC --out=runs/analysis

Flags: --tokens, tokenized-split directories (`python -m asl_vq.main --config=tokenize`),
compared side by side; --tokenizer, their tokenizer workdirs (default: the
checkpoint recorded in each tokens file); --names, their labels in the tables
and file names (default: the directories' base names); --split, which split
to analyse; --min_count, the fewest sequences a token or bigram must occur in
(and be absent from) to be considered; --letter / --token, the first-quantizer
token of the gallery, tree and angle table (default: the best token of
--letter); --gallery_size; --seed, for the gallery's random frames.
"""

from absl import flags
from absl import logging
from etils import epath

from asl_vq import cli
from asl_vq import provenance
from asl_vq.analysis import analyze

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a program, so importing the module defines no flags."""
  flags.DEFINE_list("tokens", None, "Tokenized-split directories.")
  flags.DEFINE_list(
      "tokenizer",
      [],
      "Their tokenizer workdirs (default: the "
      "checkpoint recorded in each tokens file).",
  )
  flags.DEFINE_list(
      "names", [], "Their names (default: the directories' base " "names)."
  )
  flags.DEFINE_string(
      "out", None, "Where the tables and figures go " "(local or gs://...)."
  )
  flags.DEFINE_enum(
      "split", "test", ["train", "validation", "test"], "The split analysed."
  )
  flags.DEFINE_integer(
      "min_count",
      5,
      "A token or bigram must occur in, and "
      "be absent from, at least this many sequences.",
  )
  flags.DEFINE_string(
      "letter",
      "w",
      "The figures show this letter's best " "first-quantizer token...",
  )
  flags.DEFINE_integer("token", None, "...or this first-quantizer token.")
  flags.DEFINE_integer("gallery_size", 12, "Frames in the token gallery.")
  flags.DEFINE_integer("seed", 0, "Seed of the gallery's random frames.")
  flags.mark_flags_as_required(["tokens", "out"])


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines.
  with provenance.recording(FLAGS.out):
    analyze.run(
        FLAGS.tokens,
        FLAGS.out,
        tokenizers=FLAGS.tokenizer,
        names=FLAGS.names,
        split=FLAGS.split,
        min_count=FLAGS.min_count,
        letter=FLAGS.letter,
        token=FLAGS.token,
        gallery_size=FLAGS.gallery_size,
        seed=FLAGS.seed,
    )
  print(epath.Path(FLAGS.out, "mi_table.md").read_text())


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
