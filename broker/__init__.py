"""nearloop broker: a Majordomo (MDP/0.1 + MDP/0.2) hub with credit, liveness and bounded queues."""

from broker.broker import Broker
from broker.config import BrokerConfig

__all__ = ["Broker", "BrokerConfig"]
