"""`ray job submit` entry point for supervised fine-tuning (TRL SFTTrainer) of the student
on Ray Train; takes the flags of `raydspy train sft`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/sft.py --config jobs/configs/sft-gpu.yaml --dataset s3://bucket/runs/banking77/datasets/sft

On this machine: `python jobs/sft.py --config jobs/configs/sft-cpu.yaml --dataset runs/banking77/datasets/sft`.
Inside a job, RAY_ADDRESS is set, so the run joins the cluster instead of starting a Ray.
"""

import sys

from raydspy.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", "sft", *sys.argv[1:]]))
