"""RealCast Box: a self-hosted live-streaming appliance."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
