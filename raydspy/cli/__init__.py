"""The ``raydspy`` command line (entry point `raydspy.cli.main.main`).

| module     | job                                                                    |
| ---------- | ---------------------------------------------------------------------- |
| `main`     | the parser, ``collect``, ``demo``, ``teacher up``; dispatch            |
| `distill`  | ``export``, ``train``, ``evaluate``                                    |
| `view`     | ``view``: the rollout viewer over an output folder                     |
| `common`   | what every command shares: the task flags, Ray start-up, the console   |
| `cluster`  | which Ray: a running cluster (flag, $RAY_ADDRESS, `ray start`), or own |
| `failures` | the one line a failed command prints                                   |
| `progress` | the live bar on a terminal, periodic lines in logs                     |
| `logs`     | where output goes: raydspy's on the terminal, the libraries' in a file |

Importing any of them loads neither Ray nor DSPy: a command imports what it needs when it runs.
"""
