"""`ray job submit` entry point for the evaluation: teacher, base student and trained students on
a task's held-out examples (each reward, format compliance; Markdown, JSON and PNG); takes the
flags of `raydspy evaluate`.

    python jobs/evaluate.py --task orders --student runs/orders/sft-model
"""

import sys

from raydspy.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
