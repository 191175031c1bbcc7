"""Model and key-frame sizes, as config overrides, that tests and benchmarks train at."""

# The tiny model and key frames of every CPU test that trains and of the benchmarks' smoke
# runs (each adds its own budgets after these; a later override wins).
TINY = [
    "keyframes.k=8",
    "keyframes.size=32",
    "model.width=0.125",
    "model.embedding_dim=16",
    "model.head_hidden=32",
]
# configs/demo.yaml's model: K=8, S=32, C3D width 0.125, delta input (tests/test_config.py
# checks that they agree).
DEMO_MODEL = [
    "keyframes.k=8",
    "keyframes.size=32",
    "model.width=0.125",
    "model.input=delta",
    "model.embedding_dim=32",
    "model.head_hidden=64",
]
