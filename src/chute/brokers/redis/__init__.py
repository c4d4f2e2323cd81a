"""The Redis broker (docs/brokers/redis.md): one object, RedisBroker, that is both Queue and Store.

broker.py puts together queue.py (the Queue side) and store.py (the Store side); keys.py names every
key; plan.py says what each call sends and what its reply means, for the sync side (server.py, lean.py)
and the asyncio side (aio.py) alike; scripts.py holds the Lua; connect.py the URL, pools and errors.
"""

from .broker import RedisBroker

__all__ = ["RedisBroker"]
