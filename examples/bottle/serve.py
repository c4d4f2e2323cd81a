"""Serve the Bottle example on bottle's gevent server: `python serve.py --port 8080`.

gevent must patch the standard library before anything else is imported; the chute plugin then
sends SQLite calls to gevent's threadpool, so a slow commit never stops the other requests.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402

import bottle  # noqa: E402
from reports import app  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    bottle.run(app, server="gevent", host="127.0.0.1", port=parser.parse_args().port, quiet=True)
