"""Whose kernel is whose, and how many kernels one address may hold (docs/security.md).

The page holds its kernel's id, and Voila 0.5.13 / jupyter_server 2.21 let anyone who knows an id read,
attach to and stop that kernel. Here a kernel answers only to the browser that rendered its page:

- `Visitors` (`Voila.identity_provider_class`): every browser is a visitor, named by jupyter_server's
  anonymous user in a signed, HttpOnly, SameSite cookie (Secure behind TLS);
- `VisitorKernels` (`VoilaConfiguration.multi_kernel_manager_class`, which Voila subclasses into its
  pool): binds a kernel to the visitor whose page it was handed to, and shuts down the least recently
  active kernel of an address that holds `kernels_per_address` of them;
- `OwnKernelsOnly` (`Voila.authorizer_class`): everything about a kernel (its model, its websocket, its
  shutdown) is refused to anyone but its visitor.
"""
from __future__ import annotations

import asyncio
import functools
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone

from jupyter_core.utils import ensure_async
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.base.call_context import CallContext
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer, default
from voila.request_info_handler import RequestInfoSocketHandler
from voila.shutdown_kernel_handler import VoilaShutdownKernelHandler
from voila.voila_identity_provider import VoilaIdentityProvider

from .addresses import behind_tls, client_address

# Voila starts a kernel for a page request with this variable "False", and its pool's with "True".
PREHEAT = "VOILA_PREHEAT"
# Why a visitor's kernel ended: culled; given back for the address cap; closed by its own page (or its visitor).
IDLE, CROWDED, CLOSED = "idle", "crowded", "closed"
ENDED_KEPT = 4096  # ended kernels remembered, for their pages' next heartbeat


class Visitors(VoilaIdentityProvider):
    """jupyter_server's anonymous user per browser, its cookie marked SameSite=Lax, and Secure behind TLS."""

    @default("cookie_name")
    def _cookie_name(self) -> str:
        return "bear_visitor"

    def set_login_cookie(self, handler: web.RequestHandler, user) -> None:
        secure = behind_tls(handler.request) if self.secure_cookie is None else self.secure_cookie
        options = {"httponly": True, "samesite": "Lax", "path": handler.base_url, **self.cookie_options}
        if secure:
            options.setdefault("secure", True)
        # A session cookie: the visitor is the browser session; their kernels end with it anyway.
        handler.set_secure_cookie(self.get_cookie_name(handler), self.user_to_cookie(user), expires_days=None,
                                  **options)

    def get_handlers(self) -> list:
        """Routes Voila adds to its own (voila/app.py's init_handlers), without its server_url before them (so it is
        put here): /metrics (server/metrics.py)."""
        from .metrics import handlers as metrics_handlers

        prefix = getattr(self.parent, "server_url", None) or getattr(self.parent, "base_url", None) or "/"
        return [*super().get_handlers(), *metrics_handlers(prefix)]


def requested_kernel(handler: web.RequestHandler) -> str | None:
    """The kernel id a request is about: jupyter_server's routes name it, Voila's shutdown route doesn't."""
    kernel_id = getattr(handler, "kernel_id", None) or handler.path_kwargs.get("kernel_id")
    if kernel_id is None and isinstance(handler, VoilaShutdownKernelHandler) and handler.path_args:
        kernel_id = handler.path_args[0]
    return kernel_id


class OwnKernelsOnly(Authorizer):
    """A kernel's model, websocket and shutdown belong to the visitor it was bound to; nothing else is guarded."""

    def is_authorized(self, handler: web.RequestHandler, user, action: str, resource: str) -> bool:
        if resource != "kernels":
            return True
        kernels, kernel_id = handler.kernel_manager, requested_kernel(handler)
        if kernel_id is None:  # the list of every kernel (Voila doesn't serve it)
            return False
        if kernel_id not in kernels or (action == "read" and kernels.has_ended(kernel_id)):
            return True  # nothing to guard: its model answers 404, or 410 with why it ended, to its page too
        allowed = user is not None and kernels.owner(kernel_id) == user.username
        if not allowed:
            self.log.warning("Refused %s %s from %s: not its kernel's visitor.", handler.request.method,
                             handler.request.path, client_address(handler.request))
        return allowed


@dataclass(frozen=True)
class Visit:
    visitor: str  # the username of the visitor's cookie
    address: str  # where they came from (client_address)


def _binding(hand_out):
    """Wrap Voila's pool hand-out so that the kernel it hands to a page is bound to that page's visitor."""

    @functools.wraps(hand_out)
    async def get_rendered_notebook(self, *args, **kwargs):
        page = CallContext.get(CallContext.JUPYTER_HANDLER)
        rendered = await hand_out(self, *args, **kwargs)
        self.bind(rendered[2], page)  # (render task, rendered cells, kernel id)
        return rendered

    return get_rendered_notebook


class VisitorKernels(AsyncMappingKernelManager):
    """jupyter_server's kernel manager, knowing which visitor and which address each kernel was started for."""

    kernels_per_address = Integer(8, config=True, help="Kernels one client address may hold: a new page from an "
                                  "address at the cap shuts down that address's least recently active kernel.")

    def __init__(self, **kwargs):
        from .metrics import prepare

        prepare()  # the folder the kernels count into, named in the environment they inherit (server/metrics.py)
        super().__init__(**kwargs)
        self._visits: dict[str, Visit] = {}
        self._ending: set[asyncio.Task] = set()  # shutdowns under way (asyncio keeps only weak references)
        self._ended: OrderedDict[str, str] = OrderedDict()  # kernel id -> why it ended, the latest ENDED_KEPT
        self.ended_count: Counter[str] = Counter()  # why -> kernels ended so, since start (/metrics)

    def __init_subclass__(cls, **kwargs):
        # Voila's pool (voila_kernel_manager_factory) is a subclass of this class, made at start, whose
        # get_rendered_notebook hands a preheated kernel to a page: the one moment page and kernel meet.
        super().__init_subclass__(**kwargs)
        if "get_rendered_notebook" in cls.__dict__:
            cls.get_rendered_notebook = _binding(cls.__dict__["get_rendered_notebook"])

    def has_ended(self, kernel_id: str) -> bool:
        """Ended here (culled, given back by the cap or by its page), though maybe still shutting down."""
        return kernel_id in self._ended

    def owner(self, kernel_id: str) -> str | None:
        visit = self._visits.get(kernel_id)
        return visit.visitor if visit else None

    async def start_kernel(self, *args, **kwargs) -> str:
        kernel_id = await super().start_kernel(*args, **kwargs)
        if (kwargs.get("env") or {}).get(PREHEAT) == "False":  # started for the page being rendered (pool empty)
            self.bind(kernel_id, CallContext.get(CallContext.JUPYTER_HANDLER))
        return kernel_id

    def bind(self, kernel_id: str, page: web.RequestHandler | None) -> None:
        """Give `kernel_id` to the visitor of the page request `page`; an address over the cap gives one back."""
        if page is None or page.current_user is None:  # never expected: then nobody may use the kernel
            self.log.error("Kernel %s was handed out outside a page request: it answers nobody.", kernel_id)
            return
        visit = Visit(page.current_user.username, client_address(page.request))
        self._visits[kernel_id] = visit
        # A page left asks Voila to shut its kernel down (a beacon, on beforeunload or the template's pagehide, carrying
        # the `_xsrf` cookie's value), which jupyter_server refuses without that cookie, and nothing in a Voila page
        # sets it: every kernel outlived its page until the idle cull. Reading the token sets the cookie (before the
        # page is sent).
        page.xsrf_token
        # The visit starts now. A preheated kernel has waited in the pool for as long as nobody came, maybe past
        # the idle cull: without this, the culler could end it before its page has connected.
        if kernel_id in self:  # (a kernel that died in the pool is no longer in it)
            self.get_kernel(kernel_id).last_activity = datetime.now(timezone.utc)
        theirs = [k for k, v in self._visits.items() if v.address == visit.address and k != kernel_id and k in self]
        over = max(0, len(theirs) + 1 - self.kernels_per_address)
        for old in sorted(theirs, key=self._last_activity)[:over]:
            self.log.warning("%s holds %d kernels: shutting down its least recently active one, %s.",
                             visit.address, len(theirs) + 1, old)
            del self._visits[old]  # from now on its page is told its session ended
            self._end(old, CROWDED)
            task = asyncio.get_running_loop().create_task(self.shutdown_kernel(old))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    def _last_activity(self, kernel_id: str):
        return self.get_kernel(kernel_id).last_activity

    async def shutdown_kernel(self, kernel_id: str, *args, **kwargs):
        request = CallContext.get(CallContext.JUPYTER_HANDLER)
        # Voila authorizes nothing on its shutdown route (the page's beacon as it goes): ask the authorizer here.
        if isinstance(request, VoilaShutdownKernelHandler) and not await ensure_async(
                request.authorizer.is_authorized(request, request.current_user, "write", "kernels")):
            raise web.HTTPError(403)
        if self._visits.pop(kernel_id, None):  # (the cap has already said why)
            # A request about this very kernel is its page's shutdown or its visitor's DELETE; else the culler.
            self._end(kernel_id, CLOSED if request is not None and requested_kernel(request) == kernel_id else IDLE)
        return await super().shutdown_kernel(kernel_id, *args, **kwargs)

    def remove_kernel(self, kernel_id: str):
        """Every way out of the map (shut down, culled, given back, died) ends here: forget the kernel's visit, and
        the request details of its page that Voila 0.5.13 keeps (`RequestInfoSocketHandler._cache`: URL and query
        string, up to 64 KB) until the server stops whether or not the kernel asks, so that pages with long query
        strings can't grow the server without end."""
        self._visits.pop(kernel_id, None)
        RequestInfoSocketHandler._cache.pop(kernel_id, None)
        return super().remove_kernel(kernel_id)

    def _end(self, kernel_id: str, why: str) -> None:
        if kernel_id not in self._ended:
            self.ended_count[why] += 1
        self._ended.setdefault(kernel_id, why)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def kernel_model(self, kernel_id: str) -> dict:
        """The kernel's model, with the idle time after which it is culled (the page says it when it is).
        A kernel that ended here is 410 Gone with why, so its page can tell that from a server that
        doesn't know it (404: a restarted server, or another replica), which is a lost connection."""
        if kernel_id in self._ended:  # also while it shuts down
            raise web.HTTPError(410, self._ended[kernel_id])
        return {**super().kernel_model(kernel_id), "cull_idle_timeout": self.cull_idle_timeout}
