"""A program that loads in the driver and fails in every Ray actor: the orders program, whose
factory raises once it runs inside an actor (a dependency missing on the worker nodes, say). The
run cannot go on, and the command must say so in one line."""

from __future__ import annotations

import dspy


def program() -> dspy.Module:
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        raise ModuleNotFoundError("No module named 'orders_extras' (not installed on this worker)")
    from raydspy.programs.orders import program as orders

    return orders()
