"""`ray job submit` entry point for the evaluation: teacher, base student and trained students on
banking77's test split (accuracy, format compliance; Markdown table and PNG); takes the flags of
`raydspy evaluate`.

    python jobs/evaluate.py --student runs/banking77/sft-model --output runs/banking77/eval
"""

import sys

from raydspy.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
