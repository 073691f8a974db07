"""The monitor page's server is its deployer's alone: a request from this machine, or one with the server's token.

`Deployer` (`Voila.identity_provider_class` of `make monitor`) decides before any page is rendered or any kernel
is touched: anyone else gets 403 with a sentence. The address is the one the page's visitor checks use
(addresses.client_address): behind a proxy on this machine, the visitor it forwards for counts, not the proxy.
"""
from __future__ import annotations

import ipaddress

from tornado import web

from .addresses import client_address
from .visitors import Visitors

# Voila's error page shows the status and its reason: the sentence is the reason.
REFUSED = "Only the site's deployer may open this monitor: on the machine that serves it, or with its token"


def from_this_machine(request) -> bool:
    try:
        return ipaddress.ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


class Deployer(Visitors):
    """Visitors' cookies and routes, for the deployer only: from this machine, or with the token (Voila's --token)."""

    async def get_user(self, handler: web.RequestHandler):
        user = await super().get_user(handler)  # with a token set: None unless the token (or its cookie) came
        if from_this_machine(handler.request):
            if user is None:
                user = self.generate_anonymous_user(handler)
                self.set_login_cookie(handler, user)
            return user
        if self.token and user is not None:
            return user
        handler.log.warning("Refused the monitor to %s: not this machine, and no token.",
                            client_address(handler.request))
        handler.current_user = None  # so that the error page, which asks, renders for nobody
        raise web.HTTPError(403, reason=REFUSED)

    def get_handlers(self) -> list:
        return []  # no /metrics here: the monitor's kernels answer no visitor
