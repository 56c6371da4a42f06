"""The same server as a Ray Serve application: many machines (or GPUs), one engine each.

Every replica runs the whole one-machine app (`build_app`) with its own batched engine,
loaded in its own process. Ray Serve's proxy routes each websocket to the replica with the
fewest open ones; a replica accepts `slots + 1` at once, so a stream reaches a full replica
only when every replica is full, and that replica answers "no free channels" as the
one-machine server does. A replica that dies takes only its own streams: the proxy closes
their websockets and the others go on. Each replica reports its own slots at
/api/modules_info and /metrics, and Ray counts its open streams for routing.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from engine.errors import LivecapError
from engine.serving.app import ServeSettings, build_app
from engine.serving.slots import SlotEngine

APP_NAME = "livecap"
_PROBE_SECONDS = 5.0  # how long a cluster address may take to accept a connection


class LivecapReplica:
    """One replica: Ray Serve wraps this class around the app `build_app` makes."""


def application(
    engine_factory: Callable[[], SlotEngine],
    slots: int,
    settings: ServeSettings,
    replicas: int,
    gpus_per_replica: float = 0.0,
):
    """The Ray Serve application; `engine_factory` runs once in each replica."""
    from ray import serve

    def build_replica_app():  # a plain function: Ray Serve calls it inside the replica
        return build_app(engine_factory, settings)

    ingress = serve.ingress(build_replica_app)(LivecapReplica)
    deployment = serve.deployment(
        ingress,
        name=APP_NAME,
        num_replicas=replicas,
        max_ongoing_requests=slots + 1,
        # the replica's streams are its requests; at most one waits in the proxy's queue
        max_queued_requests=replicas,
        ray_actor_options={"num_cpus": 0 if gpus_per_replica else 1, "num_gpus": gpus_per_replica},
    )
    return deployment.bind()


def run_on_cluster(
    engine_factory: Callable[[], SlotEngine],
    slots: int,
    settings: ServeSettings,
    replicas: int,
    host: str,
    port: int,
    address: str = "auto",
) -> int:
    """Deploy on the running Ray cluster at `address` and serve until interrupted."""
    if not _answers(address):
        raise LivecapError(
            f"No Ray cluster answers at {address}.",
            "Check the address (`ray start --head` prints it), or serve on one machine "
            "without --ray.",
        )
    import ray
    from ray import serve

    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        where = "" if address == "auto" else f" at {address}"
        raise LivecapError(
            f"No Ray cluster is running{where} ({exc}).",
            "Start one with `ray start --head`, or serve on one machine without --ray.",
        ) from None
    gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= replicas else 0.0
    serve.start(http_options={"host": host, "port": port})
    app = application(engine_factory, slots, settings, replicas, gpus)
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)
    return 0


def _answers(address: str) -> bool:
    """Whether anything listens at a `host:port` (or `ray://host:port`) address; true of
    `auto` and any other form, which Ray resolves itself. Ray itself retries an address with
    nothing behind it for minutes, printing warnings all the while."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return True
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_SECONDS):
            return True
    except OSError:
        return False
