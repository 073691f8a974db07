"""Who is asking: a request's client address and whether it came over TLS, believing X-Forwarded-For and
X-Forwarded-Proto only from a trusted proxy (HAProxy on this machine, or BEAR_TRUSTED_PROXIES' networks)."""
from __future__ import annotations

import ipaddress

from tornado import httputil

from .. import environment


def networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated networks ("10.0.0.0/8, fd00::/8"); ValueError that names the one that isn't."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"BEAR_TRUSTED_PROXIES: {part!r} is not a network (for example 10.0.0.0/8)") from None
    return out


# Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: one on this machine (HAProxy,
# deploy/replicas.sh), and the networks BEAR_TRUSTED_PROXIES names, such as a Kubernetes cluster's pod network
# where its ingress controller runs (deploy/kubernetes): without it, every visitor a pod gets from the
# ingress is one address, and the ninth page from anyone ends another visitor's visit.
TRUSTED_PROXIES = networks(environment.trusted_proxies())


def _from_trusted_proxy(request: httputil.HTTPServerRequest) -> bool:
    try:
        peer = ipaddress.ip_address(request.remote_ip)
    except ValueError:
        return False
    return peer.is_loopback or any(peer in net for net in TRUSTED_PROXIES)


def client_address(request: httputil.HTTPServerRequest) -> str:
    """The visitor's address. Behind a trusted proxy it is the last X-Forwarded-For entry, the one that proxy
    set from its own connection (HAProxy drops the client's: deploy/haproxy.cfg; ingress-nginx appends); from
    anywhere else the header is the client's own word, so the connection's address counts."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and _from_trusted_proxy(request):
        return forwarded.split(",")[-1].strip()
    return request.remote_ip


def behind_tls(request: httputil.HTTPServerRequest) -> bool:
    """Whether the visitor's browser speaks https: to this server, or to a trusted proxy in front of it."""
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.protocol == "https" or (forwarded.lower() == "https" and _from_trusted_proxy(request))
