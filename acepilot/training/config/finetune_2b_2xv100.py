# The seed's run: CodeGen-2B (2.7B) fully fine-tuned on two 32 GB V100s.
# `acepilot train plan --model 2.7B --gpus 2 --gpu-mem 32GB` picks ZeRO-2 at
# 30.0 GiB per GPU (sequence 1024, micro-batch 1, activation checkpointing).
nproc = 2
zero_stage = 2
gradient_checkpointing = True  # without it the activations do not fit
precision = "fp16"  # V100s have no bf16
micro_batch = 1
grad_accum = 32  # 64 sequences of 1024 tokens per optimizer step
learning_rate = 2e-5  # fine-tuning: small steps away from the pretrained weights
min_lr = 2e-6
warmup_steps = 100
max_steps = 3000
eval_interval = 200
checkpoint_interval = 200
