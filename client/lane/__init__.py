"""The shared-memory lane: a session's requests and replies between a client and a worker
on the same host, over iceoryx2, with the broker as the control plane (PROTOCOL.md §3.10).

- :mod:`client.lane.framing`: one lane message, the wire body in one buffer;
- :mod:`client.lane.iox`: iceoryx2, imported on first use; a lane's services; clean-up;
- :mod:`client.lane.worker_end` and :mod:`client.lane.hub`: the worker's lanes;
- :mod:`client.lane.client_end` and :mod:`client.lane.session_lane`: a session's lane;
- :mod:`client.lane.host` and :mod:`client.lane.support`: who may share a lane.

Nothing here imports iceoryx2 until a lane is opened; without the ``lane`` extra,
sessions go through the broker.
"""
