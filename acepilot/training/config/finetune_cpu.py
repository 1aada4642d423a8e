# A laptop or CI CPU: two gloo ranks (OMP_NUM_THREADS=1 each is set for you),
# fp32, torch's AdamW (no C++ op is compiled). For tiny models and smoke runs.
nproc = 2
zero_stage = 2
precision = "fp32"
micro_batch = 4
learning_rate = 1e-3
min_lr = 1e-4
warmup_steps = 10
max_steps = 200
eval_interval = 50
checkpoint_interval = 50
