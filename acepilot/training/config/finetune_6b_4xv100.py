# CodeGen-6B on four 32 GB V100s: ZeRO-3 is the only strategy without offload
# that fits (31.9 of 32 GiB per GPU at sequence 1024, micro-batch 1): build the
# corpus with seq_len = 1024. On three GPUs it needs 41.8 GiB; see docs/training.md.
nproc = 4
zero_stage = 3
gradient_checkpointing = True
precision = "fp16"
micro_batch = 1
grad_accum = 16
learning_rate = 1e-5
min_lr = 1e-6
warmup_steps = 100
max_steps = 3000
eval_interval = 200
checkpoint_interval = 200
