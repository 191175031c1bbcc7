"""Ray Train stages: prior learning (pretrain.py) and target learning (finetune.py)."""
