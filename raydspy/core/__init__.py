"""The in-process core: one program, one example, one rollout, and what is recorded of it.
No module here imports Ray (`tests/test_layout.py` checks), so `Collect` runs anywhere DSPy does.

| module       | job                                                                          |
| ------------ | ---------------------------------------------------------------------------- |
| `collect`    | `Collect`: the seed API, n rollouts per example, in one process              |
| `runner`     | the rollout code path: program × example × index → one `RolloutRecord`        |
| `tracing`    | the trace of every LM call a rollout made                                    |
| `token_traces` | token ids and logprobs of an LM call (vLLM's), when recorded               |
| `dry_run`    | prompts formatted by the program's adapter, no LM called                     |
| `rewards`    | the format reward, task rewards, `RewardSet`, DSPy metrics as rewards        |
| `rollouts`   | `ROLLOUT_SCHEMA`, the rollout row, the one dedupe rule                       |
| `stats`      | `RolloutStats`: every count reported over rollout rows                       |
| `cards`      | dataset cards (Hugging Face format): render, write, the input's license      |
| `rollout_card` | the card of collected rollouts: program, teacher, rewards, schema, loading |
| `identity`   | content-derived example and rollout ids, rollout seeds                       |
| `retries`    | bounded retries with back-off for the teacher and storage                    |
| `adapters`   | structured-output adapters of the teacher                                    |
| `storage`    | URIs to pyarrow filesystems (local, s3://, gs://)                            |
| `specs`      | ``MODULE:ATTR`` specs of programs and rewards                                |
| `configfile` | pydantic models read from YAML, errors naming the file                       |
"""
