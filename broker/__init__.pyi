from .broker import Broker as Broker
from .config import BrokerConfig as BrokerConfig
