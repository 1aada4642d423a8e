"""DeepSpeed fine-tuning: train.py is the per-rank script, launch.py starts it
with torchrun, DeepSpeed's launcher (multi-node) or in this process."""
