"""`ray job submit` entry point for a collection run; takes the flags of `raydspy collect`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/collect.py --program myproj.programs:qa --input s3://b/train.jsonl \
        --output s3://b/runs/1 --n 4 --teacher-url http://HEAD:8000/v1 --teacher-model llama-70b

Inside a job, RAY_ADDRESS is set, so the run joins the cluster instead of starting a Ray.
"""

import sys

from raydspy.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["collect", *sys.argv[1:]]))
