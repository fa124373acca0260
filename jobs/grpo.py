"""`ray job submit` entry point for GRPO (TRL GRPOTrainer with raydspy's format and task rewards) of the student
on Ray Train; takes the flags of `raydspy train grpo`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/grpo.py --config jobs/configs/grpo-gpu.yaml --dataset s3://bucket/runs/banking77/datasets/grpo

On this machine: `python jobs/grpo.py --config jobs/configs/grpo-cpu.yaml --dataset runs/banking77/datasets/grpo`.
Inside a job, RAY_ADDRESS is set, so the run joins the cluster instead of starting a Ray.
"""

import sys

from raydspy.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", "grpo", *sys.argv[1:]]))
