"""Test and cluster tooling for tests/, benchmarks/ and scripts/; the library never imports
it (tests/test_layering.py checks).

fakes                key-frame tables without video; fault injection around training loops
local_cluster        a multi-node Ray cluster of local processes (with local_processes)
fake_nodes           fake node resources for scheduling tests
autoscaler_stand_in  the autoscaler's decisions replayed on a local cluster
model_sizes          the tiny and the demo's model sizes as config overrides
epoch_timing         a training call's wall time and its epochs' (GPU benchmarks)
drawn_clips          hand-drawn face clips written as video (prediction-quality checks)
"""
