"""The raydspy HTTP service: collection runs submitted over HTTP, on Ray Serve.

    POST /v1/runs                     a run: program (or a preset task), input and output URIs, n, teacher, rewards
    GET  /v1/runs                     every run, newest first
    GET  /v1/runs/{id}                state, rollouts done of total, errors, mean reward, rate
    POST /v1/runs/{id}/cancel         stop a run (what it committed stays; it can be resumed)
    GET  /v1/runs/{id}/rollouts       a preview of the committed rollout rows
    GET  /docs                        OpenAPI docs

Modules: `settings` (configuration), `policy` (allow-lists), `schemas` (request and response
bodies), `runs` (the run record), `store` (records as JSON files under a state URI), `progress`
(status read from the committed Parquet parts), `executors` (runs as Ray tasks or Ray jobs),
`worker` (a run's entry point), `api` (routes), `app` (the Serve deployment).
Deploy with ``serve run serve_configs/service.yaml``.
"""

from raydspy.service.settings import ServiceSettings

__all__ = ["ServiceSettings"]
