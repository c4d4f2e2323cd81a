"""How pika's and aio-pika's errors become chute's: one `translate` for both drivers, applied by
`shared.translated` to the broker's methods, sync and async."""

from __future__ import annotations

import sys

import pika.exceptions

from ...errors import BrokerError, BrokerUnavailable, ChuteError
from .links import CONNECTION_ERRORS


def translate(exc: BaseException, url: str) -> ChuteError | None:
    """BrokerUnavailable when the server cannot be reached, BrokerError when it refused; None for an
    error that is no driver's."""
    # aiormq's errors can only be raised once aio-pika was imported (on the first async publish):
    # looked up, not imported, so the sync side never pays for importing it
    aio = sys.modules.get("aiormq.exceptions")
    lost = False
    if aio is not None:
        if isinstance(exc, (aio.AuthenticationError, aio.ProbableAuthenticationError)):
            return BrokerError(f"RabbitMQ at {url} refused the connection ({type(exc).__name__}: {exc}); "
                               "check the URL's user, password and vhost")
        if isinstance(exc, aio.ChannelClosed):  # the server refused (404, 406, …)
            return BrokerError(f"RabbitMQ at {url} refused: {exc}")
        lost = isinstance(exc, (aio.AMQPConnectionError, aio.ChannelInvalidStateError))
    if lost or isinstance(exc, CONNECTION_ERRORS):
        return BrokerUnavailable(f"RabbitMQ at {url} is unreachable ({type(exc).__name__}: {exc}); "
                                 "nothing was confirmed, try again when it is back")
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        return BrokerError(f"RabbitMQ at {url} refused: {exc.reply_code} {exc.reply_text}")
    if isinstance(exc, pika.exceptions.AMQPError) or aio is not None and isinstance(exc, aio.AMQPError):
        return BrokerError(f"RabbitMQ at {url}: {type(exc).__name__}: {exc}")
    return None
