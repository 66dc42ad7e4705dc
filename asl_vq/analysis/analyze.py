"""The token analyses of one or more tokenizers, from their tokenized splits.

`run` writes into `out`: `mi_table.md`/`.csv` (Table 3, the tokenizers side
by side), per tokenizer `heatmap_<name>.png` (Figure 2), `tree_<name>.png`
(Figure 3) and `gallery_<name>.png` (Figure 4), `angles_table.md`/`.csv`
(Table 4, the nodes of each tree), and `analysis.json` with the headline
numbers. Every caption says whether the data is real or synthetic.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple, Sequence

from etils import epath
import numpy as np

from asl_vq import errors
from asl_vq import inference
from asl_vq import tables
from asl_vq import vocab
from asl_vq.analysis import angles
from asl_vq.analysis import figures
from asl_vq.analysis import mutual_info
from asl_vq.data import datasets
from asl_vq.data import tokens as tokens_lib

_CLOSEST_PAIRS = 10  # Most similar letter pairs kept in analysis.json.


def load_tokens(tokens_dir: str, split: str) -> tokens_lib.TokenSource:
  path = os.path.join(tokens_dir, f"{split}.parquet")
  if not epath.Path(path).exists():
    raise FileNotFoundError(
        f"{path} does not exist; is {tokens_dir!r} a "
        "directory written by `python -m asl_vq.main --config=tokenize --config.checkpoint=RUN --workdir=DIR`?"
    )
  return tokens_lib.TokenSource(path)


def load_tokenizer(
    workdir: str, token_source: tokens_lib.TokenSource
) -> inference.Tokenizer:
  """The tokenizer run, checked to be the one that wrote the tokens."""
  tok = inference.Tokenizer.load(workdir)
  meta = token_source.metadata
  mine = dict(
      step=tok.step,
      num_quantizers=tok.code_spec.num_quantizers,
      codebook_size=tok.code_spec.codebook_size,
      max_len=tok.max_len,
  )
  theirs = {k: meta.get(k) for k in mine}
  if mine != theirs:
    raise errors.UserError(
        f"{token_source.path} was written by a tokenizer with "
        f"{theirs}, but {workdir} has {mine}"
    )
  return tok


def load_frames(
    tok: inference.Tokenizer,
    source,
    token_source: tokens_lib.TokenSource,
    indices: Sequence[int],
) -> dict[int, np.ndarray]:
  """{i: float32 [T', 42, 2]}: sequence i preprocessed as tokenization did,
  so frame t is the frame of code row t, laid out to be drawn
  (`Tokenizer.drawable`)."""
  if not np.array_equal(source.sequence_ids, token_source.sequence_ids):
    raise errors.UserError(
        f"{token_source.path}: its sequences are not those of "
        "the tokenizer's data split"
    )
  out = {}
  for i in indices:
    out[i] = tok.drawable(tok.preprocess(source[i]["hands"]))
    if len(out[i]) != token_source.lengths[i]:
      raise errors.UserError(
          f"sequence {token_source.sequence_ids[i]}: {len(out[i])} "
          f"preprocessed frames but {token_source.lengths[i]} code rows in "
          f"{token_source.path}"
      )
  return out


class TokenFrames(NamedTuple):
  """The frames of one first-quantizer token, over the loaded sequences."""

  frames: np.ndarray  # [M, 42, 2]
  codes: np.ndarray  # [M, Q]
  sequence_ids: np.ndarray  # [M]
  hands: np.ndarray  # [M, 21, 2]: the signing hand.


def token_frames(
    token: int,
    codes: Sequence[np.ndarray],
    frames: dict[int, np.ndarray],
    sequence_ids: np.ndarray,
) -> TokenFrames:
  parts = [(i, np.flatnonzero(codes[i][:, 0] == token)) for i in frames]
  parts = [(i, rows) for i, rows in parts if rows.size]
  if not parts:
    raise errors.UserError(
        f"token {token} occurs in none of the loaded sequences"
    )
  cat = lambda f: np.concatenate([f(i, rows) for i, rows in parts])
  return TokenFrames(
      cat(lambda i, r: frames[i][r]),
      cat(lambda i, r: codes[i][r]),
      cat(lambda i, r: np.full(len(r), sequence_ids[i])),
      cat(lambda i, r: angles.dominant_hand(frames[i])[r]),
  )


def _bigram_name(ids: int, codebook_size: int) -> str:
  return "→".join(map(str, divmod(int(ids), codebook_size)))


def _closest_pairs(
    letters: str, best: np.ndarray, similarity: np.ndarray
) -> list[list]:
  """The most similar pairs of letters whose best tokens differ."""
  i, j = np.triu_indices(len(letters), 1)
  keep = best[i] != best[j]
  i, j = i[keep], j[keep]
  top = np.argsort(-similarity[i, j], kind="stable")[:_CLOSEST_PAIRS]
  return [
      [letters[i[k]], letters[j[k]], round(float(similarity[i[k], j[k]]), 3)]
      for k in top
  ]


def _shared(letters: str, best: np.ndarray) -> list[str]:
  """Groups of letters whose best token is the same."""
  groups = {}
  for c, t in zip(letters, best):
    groups.setdefault(int(t), []).append(c)
  return ["".join(g) for g in groups.values() if len(g) > 1]


def analyze(
    name: str,
    token_source: tokens_lib.TokenSource,
    tok: inference.Tokenizer,
    out: str,
    *,
    split: str,
    min_count: int,
    letter: str,
    token: int | None,
    gallery_size: int,
    seed: int,
) -> dict[str, Any]:
  """Table 3's columns, Figures 2-4 and Table 4's rows for one tokenizer."""
  data = "real" if tok.config.data.dir else "synthetic"
  size = tok.code_spec.codebook_size
  codes = [token_source[i]["codes"] for i in range(len(token_source))]
  first = [c[:, 0] for c in codes]
  table = mutual_info.table3(first, token_source.phrases, size, min_count)
  best, ami = table["single"]
  usable = best >= 0
  if not usable.any():
    raise errors.UserError(
        f"no letter occurs in some but not all of the "
        f"{len(first)} phrases of the {split} split"
    )
  if token is None:
    if letter not in vocab.LETTERS or not usable[vocab.LETTERS.index(letter)]:
      raise errors.UserError(
          f"--letter={letter!r}: not a letter occurring in some "
          f"but not all phrases of the {split} split"
      )
    token = int(best[vocab.LETTERS.index(letter)])
  if not any((f == token).any() for f in first):
    raise errors.UserError(
        f"--token={token} does not occur in the {split} split"
    )
  letters = "".join(np.array(list(vocab.LETTERS))[usable])
  letter_tokens = best[usable]
  needed = np.union1d(letter_tokens, [token])
  indices = [i for i, f in enumerate(first) if np.isin(f, needed).any()]
  frames = load_frames(
      tok, datasets.load(tok.config)[split], token_source, indices
  )
  of = lambda t: token_frames(t, codes, frames, token_source.sequence_ids)
  what = f"{data} data, {name}, {split} split"

  codebook = tok.codebooks[0]
  similarity = figures.cosine_similarity(codebook[letter_tokens])
  order = figures.cluster_order(similarity)
  heatmap = figures.plot_heatmap(
      os.path.join(out, f"heatmap_{name}.png"),
      similarity[np.ix_(order, order)],
      [f"{letters[k]} ({letter_tokens[k]})" for k in order],
      np.stack(
          [figures.mean_hands(of(letter_tokens[k]).frames) for k in order]
      ),
      f"Figure 2 equivalent ({what}): cosine similarity of the first "
      "quantizer's codebook vectors of each letter's best token (its id in "
      "brackets), ordered by clustering; the token's mean frame on the "
      "diagonal",
  )

  mine = of(token)
  picks = figures.gallery_picks(
      mine.sequence_ids, gallery_size, np.random.default_rng(seed)
  )
  gallery = figures.plot_gallery(
      os.path.join(out, f"gallery_{name}.png"),
      mine.frames[picks],
      mine.sequence_ids[picks],
      f"Figure 4 equivalent ({what}): first-quantizer token {token}, "
      f"{len(picks)} random frames from different sequences",
  )
  nodes = figures.code_tree(mine.codes)
  tree = figures.plot_tree(
      os.path.join(out, f"tree_{name}.png"),
      mine.frames,
      nodes,
      f"Figure 3 equivalent ({what}): token {token}'s frames, split by the "
      "second code, then the third (mean frames)",
  )
  angle_rows = [
      [
          name,
          " / ".join(map(str, path)),
          len(index),
          *(
              angles.summary(angles.flexion(mine.hands[index], f, angles.PIP))
              for f in range(len(angles.FINGER_NAMES))
          ),
      ]
      for path, index in nodes
  ]

  bigram, bigram_ami = table["bigram"]
  return dict(
      data=data,
      sequences=len(token_source),
      letters_used=letters,
      token=[int(t) if t >= 0 else "n/a" for t in best],
      ami=ami,
      bigram=[_bigram_name(b, size) if b >= 0 else "n/a" for b in bigram],
      bigram_ami=bigram_ami,
      mean_ami=float(np.nanmean(ami)),
      mean_ami_bigram=float(np.nanmean(bigram_ami)),
      figure_token=token,
      shared_tokens=_shared(letters, letter_tokens),
      closest_pairs=_closest_pairs(letters, letter_tokens, similarity),
      files=[os.path.basename(p) for p in (heatmap, tree, gallery)],
      angle_rows=angle_rows,
  )


def run(
    tokens: Sequence[str],
    out: str,
    *,
    tokenizers: Sequence[str] = (),
    names: Sequence[str] = (),
    split: str = "test",
    min_count: int = 5,
    letter: str = "w",
    token: int | None = None,
    gallery_size: int = 12,
    seed: int = 0,
) -> dict[str, Any]:
  """Everything of the module docstring; returns analysis.json's content.

  tokenizers: their workdirs, one per tokens dir (default: the checkpoint
  recorded in each tokens file); names: column and file names (default: the
  tokens dirs' base names). The figures show `token`, by default the best
  single token of `letter`.
  """
  tokens = list(tokens)
  tokenizers = list(tokenizers) or [None] * len(tokens)
  names = list(names) or [os.path.basename(os.path.normpath(t)) for t in tokens]
  if not tokens or not len(tokens) == len(tokenizers) == len(names):
    raise errors.UserError(
        f"{len(tokens)} tokens dirs, {len(tokenizers)} "
        f"tokenizers and {len(names)} names: give one each"
    )
  if len(set(names)) != len(names):
    raise errors.UserError(f"names must differ, got {names}")
  epath.Path(out).mkdir(parents=True, exist_ok=True)
  results = {}
  for name, tokens_dir, tokenizer_dir in zip(names, tokens, tokenizers):
    source = load_tokens(tokens_dir, split)
    tokenizer_dir = tokenizer_dir or source.metadata["checkpoint"]
    results[name] = analyze(
        name,
        source,
        load_tokenizer(tokenizer_dir, source),
        out,
        split=split,
        min_count=min_count,
        letter=letter,
        token=token,
        gallery_size=gallery_size,
        seed=seed,
    )
    results[name].update(tokens=tokens_dir, tokenizer=tokenizer_dir)
  data = "/".join(sorted({r["data"] for r in results.values()}))

  header, columns = ["letter"], []
  for name, r in results.items():
    header += [
        f"{name} token",
        f"{name} AMI",
        f"{name} bigram",
        f"{name} bigram AMI",
    ]
    columns += [r["token"], list(r["ami"]), r["bigram"], list(r["bigram_ami"])]
  rows = [
      [c, *(col[k] for col in columns)] for k, c in enumerate(vocab.LETTERS)
  ]
  rows.append(
      [
          "mean",
          *(
              v
              for r in results.values()
              for v in ("", r["mean_ami"], "", r["mean_ami_bigram"])
          ),
      ]
  )
  sequences = {r["sequences"] for r in results.values()}
  missing = sorted(
      set(vocab.LETTERS)
      - set.union(*(set(r["letters_used"]) for r in results.values()))
  )
  mi_note = (
      f"Table 3 equivalent ({data} data, {split} split, "
      f"{'/'.join(map(str, sorted(sequences)))} sequences): per letter, the "
      "first-quantizer token, and the bigram of consecutive distinct tokens "
      "(after collapsing repeats; u→v), whose occurrence in a sequence has "
      "the highest adjusted mutual information (scikit-learn's AMI) with the "
      "letter's occurrence in the phrase. Only tokens and bigrams present in "
      f"at least {min_count} sequences and absent from at least {min_count} "
      "are considered. mean: over the letters"
      + (
          f" ({', '.join(missing)}: n/a, in no phrase or in every phrase)."
          if missing
          else "."
      )
  )
  tables.write_table(out, "mi_table", header, rows, mi_note)
  tables.write_table(
      out,
      "angles_table",
      [
          "tokenizer",
          "codes (q0 / q1 / q2)",
          "frames",
          *(f"{f} PIP" for f in angles.FINGER_NAMES),
      ],
      [row for r in results.values() for row in r["angle_rows"]],
      f"Table 4 equivalent ({data} data, {split} split): PIP flexion of the "
      "signing hand's fingers in degrees (0 = straight; 2D image "
      "coordinates), mean ± std over the frames of each node of the code "
      "trees of Figure 3.",
  )
  summary = dict(
      data=data,
      split=split,
      min_count=min_count,
      tokenizers={
          name: {
              k: r[k]
              for k in (
                  "tokens",
                  "tokenizer",
                  "sequences",
                  "mean_ami",
                  "mean_ami_bigram",
                  "letters_used",
                  "figure_token",
                  "shared_tokens",
                  "closest_pairs",
              )
          }
          for name, r in results.items()
      },
      files=[
          "mi_table.md",
          "mi_table.csv",
          "angles_table.md",
          "angles_table.csv",
      ]
      + [f for r in results.values() for f in r["files"]],
  )
  epath.Path(out, "analysis.json").write_text(json.dumps(summary, indent=1))
  return summary
