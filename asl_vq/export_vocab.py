r"""Sign codes as tokens of a language model: a Hugging Face `tokenizers` file
and starting embeddings for them.

  python -m asl_vq.export_vocab --tokenizer=RUN --out=DIR \
      [--base=tokenizer.json] [--layout=code|frame] [--frame_quantizers=1] \
      [--width=4096] [--projection=orthogonal|pca] [--seed=0] \
      [--tokens=TOKENS] [--which=best]

Writes `DIR/tokenizer.json` (`tokenizers.Tokenizer.from_file` loads it),
`DIR/embeddings.safetensors` and `DIR/sign_vocab.json` (the layout, the
first new id, the special tokens and the tokenizer's fingerprint); with
`--tokens=TOKENS` (a tokenized dataset) also `DIR/corpus/<split>.jsonl`, an
interleaved text-sign corpus in the tokenizer's own signer split
(`write_corpus`: phrase then signing, and signing then phrase).

Layouts, for Q quantizers of K codes:
  code   one token per code per quantizer, `<a98>` .. (Q x K tokens): the
         text `Tokenizer.to_text` writes, `<a98><b624><c235><d17> <a3>...`,
         is exactly what the file tokenizes.
  frame  one token per frame of the first `frame_quantizers` codes,
         `<f98>` (k = 1) or `<f98_624>` (k = 2): K^k tokens, refused above
         `MAX_FRAME_TOKENS`; `frame_text` writes the text.
Special tokens: `<sign>` / `</sign>` around a sequence of signing (added by
the standalone file's post-processor; give them yourself with a base), and
`<frame>`, the frame separator (the space of the code layout's text; with a
base, write it: `frame_text` / `to_text(codes).replace(" ", "<frame>")`).

Standalone, the ids are: <unk> 0, <sign> 1, </sign> 2, <frame> 3, then the
code tokens. With `--base` (an LLM's tokenizer.json) the base's vocabulary and
ids are unchanged and the new tokens are added after it (`first_id`).

Embeddings (safetensors): `codebooks` float32 [Q, K, D], the tokenizer's
code vectors, and, one row per new code token in id order, `tokens` [V, D]:
a code token's row is its code vector; a frame token's is the sum of its
quantizers' vectors, which is what the tokenizer's decoder reads (the RVQ
sums its quantizers; the rows of one frame's `code` tokens are not meant to
be concatenated). With `--width=W`, `projection` [D, W] and `tokens_projected`
[V, W] = tokens @ projection, rows to copy into an LLM's embedding table:
`orthogonal` (a random orthogonal map, seeded: distances kept up to scale)
or `pca` (the codebooks' principal directions, zero-padded past D); each
scaled so the projected rows have unit mean norm. The special tokens get no
row (initialise them as the LLM does its own).

Needs the `lm` extra (`tokenizers`, `safetensors`).
"""

from __future__ import annotations

import json
import os
import re
import string
from typing import Sequence

import numpy as np
from absl import app
from absl import flags
from etils import epath

from asl_vq import cli
from asl_vq import errors
from asl_vq import fileio
from asl_vq import inference
from asl_vq.data import splits as splits_lib

LAYOUTS = ("code", "frame")
PROJECTIONS = ("orthogonal", "pca")
UNK, BEGIN, END, FRAME = "<unk>", "<sign>", "</sign>", "<frame>"
MAX_FRAME_TOKENS = 1 << 17
_TOKEN = re.compile(r"<([a-z])(\d+)>|<f(\d+(?:_\d+)*)>")


def _libraries():
  try:
    # pylint: disable=g-import-not-at-top
    import safetensors.numpy
    import tokenizers
  except ImportError:
    raise errors.MissingExtra(
        "asl_vq.export_vocab needs tokenizers and safetensors: pip install "
        "-e '.[lm]'"
    ) from None
  return tokenizers, safetensors.numpy


def code_tokens(
    num_quantizers: int,
    codebook_size: int,
    layout: str = "code",
    frame_quantizers: int = 1,
) -> list[str]:
  """The new code tokens in id order (see the module docstring).

  Raises:
    errors.UserError: an unknown layout, or a frame layout too large.
  """
  if layout == "code":
    letters = string.ascii_lowercase[:num_quantizers]
    return [f"<{l}{c}>" for l in letters for c in range(codebook_size)]
  if layout != "frame":
    raise errors.UserError(f"--layout={layout}: one of {', '.join(LAYOUTS)}")
  k = frame_quantizers
  if not 1 <= k <= num_quantizers or codebook_size**k > MAX_FRAME_TOKENS:
    raise errors.UserError(
        f"--frame_quantizers={k}: the frame layout needs 1 <= k <= "
        f"{num_quantizers} and {codebook_size}^k <= {MAX_FRAME_TOKENS} tokens"
    )
  grid = np.indices((codebook_size,) * k).reshape(k, -1).T
  return ["<f" + "_".join(map(str, g)) + ">" for g in grid]


def frame_text(codes: np.ndarray, frame_quantizers: int = 1) -> str:
  """Codes int [T, >= k] -> the frame layout's text, `<f98_624><frame>...`."""
  codes = np.asarray(codes)[:, :frame_quantizers]
  return FRAME.join("<f" + "_".join(map(str, c)) + ">" for c in codes)


def codes_from_tokens(tokens: Sequence[str]) -> np.ndarray:
  """Token strings (e.g. `[hf.id_to_token(i) for i in ids]`) -> int32
  codes [T, k]: one row per frame, special and other tokens skipped; a
  frame starts at each `<a..>` (code layout) or frame token.

  Raises:
    errors.UserError: quantizers out of order within a frame.
  """
  rows = []
  for token in tokens:
    m = _TOKEN.fullmatch(token)
    if m is None:
      continue
    if m[3] is not None:
      rows.append([int(c) for c in m[3].split("_")])
    elif m[1] == "a":
      rows.append([int(m[2])])
    elif rows and ord(m[1]) - ord("a") == len(rows[-1]):
      rows[-1].append(int(m[2]))
    else:
      raise errors.UserError(f"{token}: quantizer out of order in a frame")
  if len({len(r) for r in rows}) > 1:
    raise errors.UserError("frames hold different numbers of quantizers")
  return np.asarray(rows, np.int32).reshape(len(rows), -1)


def build(
    tok: inference.Tokenizer,
    layout: str = "code",
    frame_quantizers: int = 1,
    base: str | None = None,
):
  """(`tokenizers.Tokenizer`, first new id): standalone, or `base`'s
  tokenizer.json with the new tokens after its vocabulary."""
  tokenizers, _ = _libraries()
  spec = tok.code_spec
  new = code_tokens(
      spec.num_quantizers, spec.codebook_size, layout, frame_quantizers
  )
  if base is None:
    vocab = {t: i for i, t in enumerate([UNK, BEGIN, END, FRAME] + new)}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, UNK))
    if layout == "code":  # the text form's space is the frame separator.
      hf.normalizer = tokenizers.normalizers.Replace(" ", FRAME)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex(r"<[^<>]*>"), behavior="isolated"
    )
    fuse = [tokenizers.decoders.Fuse()]
    hf.decoder = tokenizers.decoders.Sequence(
        [tokenizers.decoders.Replace(FRAME, " ")] + fuse
        if layout == "code"
        else fuse
    )
    hf.add_special_tokens([BEGIN, END])
    hf.post_processor = tokenizers.processors.TemplateProcessing(
        single=f"{BEGIN} $A {END}",
        special_tokens=[(BEGIN, vocab[BEGIN]), (END, vocab[END])],
    )
    return hf, vocab[new[0]]
  try:
    hf = tokenizers.Tokenizer.from_str(epath.Path(base).read_text())
  except Exception as e:  # pylint: disable=broad-except
    # tokenizers raises a bare Exception on a file it cannot parse.
    raise errors.UserError(
        f"--base={base}: not a tokenizers " f"tokenizer.json ({e})"
    ) from None
  clash = [
      t for t in new + [FRAME, BEGIN, END] if hf.token_to_id(t) is not None
  ]
  if clash:
    raise errors.UserError(
        f"--base={base}: already holds {clash[0]!r} (and "
        f"{len(clash) - 1} more of the new tokens)"
    )
  hf.add_tokens(
      [tokenizers.AddedToken(t, normalized=False) for t in new + [FRAME]]
  )
  hf.add_special_tokens([BEGIN, END])
  first = hf.token_to_id(new[0])
  if [hf.token_to_id(t) for t in (new[-1], new[0])] != [
      first + len(new) - 1,
      first,
  ]:
    raise errors.UserError(
        f"--base={base}: the new tokens did not get "
        "consecutive ids, so the embedding rows would not "
        "match them"
    )
  return hf, first


def embeddings(
    tok: inference.Tokenizer,
    layout: str = "code",
    frame_quantizers: int = 1,
    width: int | None = None,
    projection: str = "orthogonal",
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """The safetensors arrays of the module docstring."""
  books = tok.codebooks.astype(np.float32)  # [Q, K, D]
  q, k, d = books.shape
  if layout == "code":
    rows = books.reshape(q * k, d)
  else:
    code_tokens(q, k, layout, frame_quantizers)  # the size check.
    grid = np.indices((k,) * frame_quantizers).reshape(frame_quantizers, -1)
    rows = sum(books[j][grid[j]] for j in range(frame_quantizers))
  out = {"codebooks": books, "tokens": np.ascontiguousarray(rows)}
  if width:
    if projection == "orthogonal":
      rng = np.random.default_rng(seed)
      m = rng.normal(size=(max(d, width), max(d, width)))
      basis, _ = np.linalg.qr(m)
      proj = basis[:d, :width]
    elif projection == "pca":
      flat = books.reshape(-1, d) - books.reshape(-1, d).mean(0)
      _, _, vt = np.linalg.svd(flat, full_matrices=False)
      proj = np.zeros((d, width))
      proj[:, : min(d, width)] = vt.T[:, : min(d, width)]
    else:
      raise errors.UserError(
          f"--projection={projection}: one of {', '.join(PROJECTIONS)}"
      )
    projected = rows @ proj
    scale = 1.0 / max(float(np.linalg.norm(projected, axis=1).mean()), 1e-12)
    out["projection"] = (proj * scale).astype(np.float32)
    out["tokens_projected"] = (projected * scale).astype(np.float32)
  return out


def sign_text(
    codes: np.ndarray, layout: str = "code", frame_quantizers: int = 1
) -> str:
  """Codes int [T, Q] -> `<sign>...</sign>` with `<frame>` between frames:
  the corpus' form, which the standalone file and a base both read."""
  body = (
      inference.codes_text(codes, FRAME)
      if layout == "code"
      else frame_text(codes, frame_quantizers)
  )
  return f"{BEGIN}{body}{END}"


def write_corpus(
    tokens_dir: str,
    out: str,
    layout: str = "code",
    frame_quantizers: int = 1,
    tokenizer: str | None = None,
) -> dict[str, int]:
  """`out/<split>.jsonl` from a tokenized dataset (configs/tokenize.py's
  output: the tokenizer's own signer split, kept): one record per sequence,
  {id, participant_id, phrase, signing (`sign_text`), text_to_sign
  (phrase, newline, signing), sign_to_text (signing, newline, phrase)}.
  `tokenizer`: the fingerprint the tokens must have been made with (the
  exported vocabulary's). Returns the records per split.

  Raises:
    errors.UserError: tokens of another tokenizer.
  """
  # pylint: disable-next=g-import-not-at-top
  from asl_vq.data import tokens as tokens_lib

  counts = {}
  for split in splits_lib.SPLITS:
    source = tokens_lib.TokenSource(
        os.path.join(tokens_dir, f"{split}.parquet")
    )
    made_by = source.metadata.get("tokenizer")
    if tokenizer is not None and made_by != tokenizer:
      raise errors.UserError(
          f"{source.path}: made by tokenizer {made_by}, not {tokenizer} "
          "(--tokenizer's): tokenize with it first (configs/tokenize.py)"
      )
    lines = []
    for i in range(len(source)):
      item = source[i]
      signing = sign_text(item["codes"], layout, frame_quantizers)
      lines.append(
          json.dumps(
              dict(
                  id=int(item["sequence_id"]),
                  participant_id=int(item["participant_id"]),
                  phrase=item["phrase"],
                  signing=signing,
                  text_to_sign=f"{item['phrase']}\n{signing}",
                  sign_to_text=f"{signing}\n{item['phrase']}",
              )
          )
          + "\n"
      )
    fileio.atomic_write(
        os.path.join(out, f"{split}.jsonl"),
        lambda f, lines=lines: f.write("".join(lines).encode()),
    )
    counts[split] = len(lines)
  return counts


def export(
    tok: inference.Tokenizer,
    out: str,
    *,
    layout: str = "code",
    frame_quantizers: int = 1,
    base: str | None = None,
    width: int | None = None,
    projection: str = "orthogonal",
    seed: int = 0,
) -> dict:
  """Writes the three files of the module docstring; returns sign_vocab."""
  _, st = _libraries()
  hf, first = build(tok, layout, frame_quantizers, base)
  arrays = embeddings(tok, layout, frame_quantizers, width, projection, seed)
  spec = tok.code_spec
  info = dict(
      layout=layout,
      frame_quantizers=frame_quantizers,
      num_quantizers=spec.num_quantizers,
      codebook_size=spec.codebook_size,
      first_id=first,
      num_tokens=len(arrays["tokens"]),
      begin=BEGIN,
      end=END,
      frame=FRAME,
      base=base,
      tokenizer=tok.fingerprint,
      width=width,
      projection=projection if width else None,
  )
  if not fileio.is_remote(out):
    os.makedirs(out, exist_ok=True)
  with fileio.writing(os.path.join(out, "tokenizer.json")) as local:
    hf.save(local)
  fileio.atomic_write(
      os.path.join(out, "embeddings.safetensors"),
      lambda f: f.write(
          st.save(arrays, metadata={k: json.dumps(v) for k, v in info.items()})
      ),
  )
  fileio.write_json(os.path.join(out, "sign_vocab.json"), info)
  return info


FLAGS = flags.FLAGS


def _define_flags() -> None:
  cli.define_tokenizer_flags()
  flags.DEFINE_string("out", None, "The directory to write.")
  flags.DEFINE_string("base", None, "An LLM's tokenizer.json to add to.")
  flags.DEFINE_enum(
      "layout",
      "code",
      LAYOUTS,
      "One token per code, or per "
      "frame of the first --frame_quantizers codes.",
  )
  flags.DEFINE_integer("frame_quantizers", 1, "Quantizers per frame token.")
  flags.DEFINE_integer(
      "width",
      None,
      "An LLM's embedding width: also write " "the rows projected to it.",
  )
  flags.DEFINE_enum("projection", "orthogonal", PROJECTIONS, "How.")
  flags.DEFINE_integer("seed", 0, "Of the orthogonal projection.")
  flags.DEFINE_string(
      "tokens",
      None,
      "A tokenized dataset (configs/"
      "tokenize.py's output): also write its text-sign corpus "
      "to OUT/corpus/<split>.jsonl.",
  )
  flags.mark_flags_as_required(["out"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _libraries()  # before the slow model load.
  tok = inference.Tokenizer.load(FLAGS.tokenizer, FLAGS.which)
  info = export(
      tok,
      FLAGS.out,
      layout=FLAGS.layout,
      frame_quantizers=FLAGS.frame_quantizers,
      base=FLAGS.base,
      width=FLAGS.width,
      projection=FLAGS.projection,
      seed=FLAGS.seed,
  )
  print(
      f"wrote {FLAGS.out}: {info['num_tokens']} tokens from id "
      f"{info['first_id']} ({info['layout']} layout)"
  )
  if FLAGS.tokens:
    corpus = os.path.join(FLAGS.out, "corpus")
    if not fileio.is_remote(corpus):
      os.makedirs(corpus, exist_ok=True)
    counts = write_corpus(
        FLAGS.tokens,
        corpus,
        FLAGS.layout,
        FLAGS.frame_quantizers,
        tok.fingerprint,
    )
    print(f"wrote {corpus}: {counts}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
