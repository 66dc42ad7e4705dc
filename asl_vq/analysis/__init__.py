"""What the tokens mean: the paper's Table 3, Figures 2-4 and Table 4.

  python -m asl_vq.analysis --tokens=runs/table2/tokens_rvq,runs/table2/tokens_rvq_ctc \
      --names=RVQ,RVQ+CTC --out=runs/analysis

`mutual_info` (token-letter AMI, vectorised), `angles` (finger-joint angles),
`figures` (heatmap, code tree, gallery) are pure functions of arrays;
`analyze.run` reads the tokenized splits, the tokenizers and the frames
behind the codes, and writes the tables and figures.
"""
