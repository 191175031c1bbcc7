"""The training stage: the model and its losses, and the loops that learn it on Ray Train.

models, losses   the siamese C3D, its heads, and the pair/focal losses
data, step       the key-frame table as tensors (one input normalisation), one optimiser step
runtime          devices, workers, DDP and compile set-up shared by the loops
checkpoints      the checkpoints the loops write and resume from
pretrain         prior learning (episodic pairs); finetune: target learning on one fold
interpolate      learning the frame interpolator the key-frame stage can use (adaconv)
"""
