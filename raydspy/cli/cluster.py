"""Which Ray a command runs on: a running cluster when there is one, else a Ray of its own.

Every command looks, in this order (Ray's own order, `ray.init`):

1. ``--ray-address`` (``HOST:PORT`` of a GCS, ``ray://HOST:PORT``, ``auto``, or ``local``);
2. ``$RAY_ADDRESS`` (``ray job submit`` sets it for the job's driver);
3. the cluster a ``ray start --head`` on this machine recorded (``<temp dir>/ray/ray_current_cluster``);
4. else a local Ray of ``--num-cpus`` logical CPUs, which stops with the command.

Joining a running cluster skips starting the GCS, raylet and dashboard: seconds instead of the
tens of seconds a local start costs on a small machine (BENCHMARKS.md, "warm cluster"). ``local``
always starts a Ray of its own.

An address that does not answer is said in one line (`ClusterUnreachableError`) within
`PROBE_TIMEOUT_S`: `ray.init` itself waits for minutes on an address where nothing listens.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from raydspy.errors import ClusterUnreachableError

__all__ = ["PROBE_TIMEOUT_S", "RayTarget", "resolve", "connect"]

#: Seconds to wait for a TCP connection to a cluster's address before calling it unreachable.
PROBE_TIMEOUT_S = 5.0

# Set by Ray's job manager in a job's driver (`ray.dashboard.modules.job.job_supervisor`): the job
# already carries its runtime environment, and Ray refuses to merge a second one key by key.
_IN_RAY_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"


@dataclass(frozen=True)
class RayTarget:
    """Where a command's Ray is.

    Attributes:
        address: ``HOST:PORT`` (or ``ray://...``) to join; None to start a local Ray.
        source: what named it: ``"--ray-address"``, ``"$RAY_ADDRESS"``, ``"ray start"`` (the address
            file of a local head), or ``"local"``.
    """

    address: str | None
    source: str

    @property
    def joins(self) -> bool:
        return self.address is not None


def resolve(flag: str | None, *, temp_dir: str | None = None) -> RayTarget:
    """The `RayTarget` of ``--ray-address`` (``flag``), ``$RAY_ADDRESS`` and this machine's
    ``ray start`` address file, in that order.

    Raises:
        ClusterUnreachableError: ``auto`` was asked for and no cluster runs on this machine.
    """
    from ray._private.services import find_bootstrap_address  # what ray.init(address=None) reads

    named = ((flag, "--ray-address"), (os.environ.get("RAY_ADDRESS"), "$RAY_ADDRESS"))
    asked = next(((value, source) for value, source in named if value), None)
    if asked is not None and asked[0] == "local":
        return RayTarget(None, "local")
    if asked is not None and asked[0] != "auto":
        return RayTarget(*asked)
    found = find_bootstrap_address(temp_dir)
    if found:
        return RayTarget(found, "ray start")
    if asked is not None:  # "auto", and nothing to find
        raise ClusterUnreachableError(
            f"{asked[1]} is 'auto' but no `ray start --head` runs on this machine: start one, give "
            "its address, or leave the flag out to start a local Ray"
        )
    return RayTarget(None, "local")


def connect(flag: str | None, num_cpus: int) -> RayTarget:
    """Join the cluster `resolve` finds, or start a local Ray of ``num_cpus`` logical CPUs.

    A joined cluster's workers get this directory on their ``PYTHONPATH`` (so ``--program
    myproj.programs:qa`` imports there as here) unless the command runs as a Ray job, whose
    runtime environment already says where its code is.

    Raises:
        ClusterUnreachableError: the address does not accept a connection within `PROBE_TIMEOUT_S`.
    """
    import ray

    target = resolve(flag)
    env_vars = {"PYTHONPATH": os.getcwd(), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if not target.joins:
        # "local": without it ray.init joins the cluster in this machine's address file, if any.
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env_vars},
        )
        return target
    _probe(target)
    runtime_env = None if _IN_RAY_JOB in os.environ else {"env_vars": env_vars}
    try:
        ray.init(address=target.address, log_to_driver=False, runtime_env=runtime_env)
    except ConnectionError as e:  # it listened, then stopped answering (a head going down)
        raise ClusterUnreachableError(f"the Ray cluster at {target.address} ({target.source}) failed: {e}") from e
    return target


def _probe(target: RayTarget) -> None:
    """A TCP connection to the address's host and port, or `ClusterUnreachableError`."""
    hostport = target.address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    fix = (
        "the file of a `ray start --head` that is no longer running: `ray stop`, or --ray-address local"
        if target.source == "ray start"
        else "is the head up (`ray status`)? leave the address out to start a local Ray"
    )
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=PROBE_TIMEOUT_S):
            return
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise ClusterUnreachableError(
            f"no Ray cluster answers at {target.address} (from {target.source}): {reason}; {fix}"
        ) from e
