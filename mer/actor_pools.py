"""The fixed Ray Data actor pools of the stages that map their work one item at a time: the
key-frame stage's chunks (mer.keyframes.preprocess) and the spotting stage's windows
(mer.spotting.stage). Each actor holds one CPU; how many items it may hold at once is the
one choice made here.
"""

from __future__ import annotations

# An actor keeps a second item queued only where every actor has at least this many items
# to do; below it, one at a time.
ITEMS_PER_ACTOR_FOR_A_QUEUE = 4


def items_in_flight(actors: int, items: int) -> int:
    """How many items Ray Data may hand each of `actors` actors at once, for `items` items.

    Two where there is work enough: with one, an actor that finished an item waits for
    Ray Data's scheduling loop to notice (its ray.wait waits up to 0.1 s for every running
    task), on a driver that shares the CPUs with the actors: at concurrency 2 on 2 cores a
    fifth of the actors' time went idle between chunks (benchmarks/keyframes.py); with the
    next item already queued the actor starts it at once. One where the items are few per
    actor: actors come up one by one (on a cluster, on nodes that start one by one), and
    the first one up would take two items while another, later, gets none
    (configs/tiny.yaml's two chunks on two decode nodes).
    """
    return 2 if items >= ITEMS_PER_ACTOR_FOR_A_QUEUE * max(actors, 1) else 1


def fixed_pool(actors: int, items: int):
    """A Ray Data pool of exactly `actors` actors for `items` items (items_in_flight each)."""
    import ray.data  # the drivers import Ray when they run a stage, not when imported

    return ray.data.ActorPoolStrategy(
        size=actors, max_tasks_in_flight_per_actor=items_in_flight(actors, items)
    )
