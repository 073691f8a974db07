"""A hostile visitor against a real Voila server on loopback (docs/security.md): each test sends the hostile
input itself, bounded in count and time, then checks that the server still answers everyone else."""
import http.cookiejar
import json
import os
import signal
import struct
import time
import urllib.request
import uuid

import psutil
import pytest
import websocket
from tornado.web import create_signed_value

from browser import ROOT, WIDGET_BUTTON, chromium, kernels, open_app, require_browser, upload_file, voila, wait_card, wait_for
from corpus import encode, photo
from wire import V1, channels, cookie_header, get, is_closed, kernel_id, replies, request, send, v1_frame


@pytest.fixture(scope="module")
def server():
    with voila() as (url, log, proc):
        yield url, log, proc


def answers_health(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/voila/static/health.txt", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def kernel_answers(url: str, kernel: str, jar: http.cookiejar.CookieJar | None = None) -> bool:
    """A well-formed kernel_info_request on a fresh socket gets its reply: the page's own traffic still flows."""
    ws = channels(url, kernel, **({"jar": jar} if jar is not None else {}))
    try:
        send(ws, "kernel_info_request")
        return "kernel_info_reply" in replies(ws, until="kernel_info_reply")
    finally:
        ws.close()


@pytest.mark.parametrize("frame, subprotocols", [
    pytest.param(struct.pack("<Q", 2**62), [V1], id="v1-part-count-2**62"),
    pytest.param(struct.pack("!I", 0x7FFFFFFF) + b"\0" * 8, None, id="legacy-buffer-count-0x7fffffff"),
])
def test_one_hostile_frame_neither_stops_nor_fills_the_server(server, frame, subprotocols):
    url, log, proc = server
    _, page = get(url + "/")
    kernel = kernel_id(page)
    before = psutil.Process(proc.pid).memory_info().rss
    ws = channels(url, kernel, subprotocols)
    ws.send(frame, opcode=websocket.ABNF.OPCODE_BINARY)
    assert is_closed(ws), "the attacker's socket stays open"
    start = time.time()
    assert answers_health(url, timeout=2.0) and time.time() - start < 2.0, "no answer on the health route within 2 s"
    time.sleep(2)  # a loop over the count would still be growing: give it time to show
    grown = (psutil.Process(proc.pid).memory_info().rss - before) / 2**20
    assert grown < 50, f"the server grew by {grown:.0f} MiB"
    assert answers_health(url)
    assert kernel_answers(url, kernel), "the visitor's kernel no longer answers a well-formed message"
    assert "Closing the websocket of kernel" in log.read_text()


@pytest.mark.parametrize("frame", [
    pytest.param(b"", id="empty"),
    pytest.param(struct.pack("<Q", 6) + struct.pack("<Q", 10**12) * 6 + b"shell", id="offsets-past-the-end"),
    pytest.param(struct.pack("<Q", 3) + b"\0" * 40, id="too-few-parts"),
    pytest.param(b"\x01" * 200, id="garbage"),
    pytest.param(json.dumps({"channel": "shell", "header": {"msg_type": "kernel_info_request"}}), id="text-frame"),
])
def test_a_malformed_frame_closes_that_socket_and_the_kernel_goes_on(server, frame):
    url, _, _ = server
    _, page = get(url + "/")
    kernel = kernel_id(page)
    ws = channels(url, kernel)
    ws.send(frame, opcode=websocket.ABNF.OPCODE_TEXT if isinstance(frame, str) else websocket.ABNF.OPCODE_BINARY)
    assert is_closed(ws)
    assert answers_health(url)
    assert kernel_answers(url, kernel)


# A valid message the page never sends: one visitor could grow their kernel or the shared server with it.

def image_widget(buffer: bytes) -> dict:
    """The comm_open content that makes the kernel build an ipywidgets Image holding `buffer`."""
    return {"comm_id": uuid.uuid4().hex, "target_name": "jupyter.widget",
            "data": {"state": {"_model_module": "@jupyter-widgets/controls", "_model_module_version": "2.0.0",
                               "_model_name": "ImageModel", "_view_module": "@jupyter-widgets/controls",
                               "_view_module_version": "2.0.0", "_view_name": "ImageView", "value": {}},
                     "buffer_paths": [["value"]]}}


@pytest.mark.parametrize("what", ["a widget of its own", "every widget's state, again and again",
                                  "every widget's state, again, with a byte that isn't UTF-8", "a 1 MB widget update",
                                  "content that is not JSON", "a replayed message", "a socket more than a kernel may have"])
def test_a_message_the_page_never_sends_closes_that_socket_and_the_kernel_goes_on(server, what):
    from bear_classifier.server.guard import MAX_SOCKETS, MAX_STATE_REQUESTS

    url, log, _ = server
    kernel, jar = visitor_page(url)
    ws = channels(url, kernel, jar=jar)
    if what == "a widget of its own":  # 1 MB here; 30 of 30 MB grew a kernel by 900 MB
        send(ws, "comm_open", image_widget(b"\0" * 2**20), buffers=[b"\0" * 2**20], metadata={"version": "2.1.0"})
    elif what == "every widget's state, again and again":  # each answer is every widget's state, ~60 KB
        control = uuid.uuid4().hex
        send(ws, "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
             metadata={"version": "1.0.0"})
        for _ in range(MAX_STATE_REQUESTS + 1):
            send(ws, "comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
    elif what == "every widget's state, again, with a byte that isn't UTF-8":  # the kernel reads it all the same
        control = uuid.uuid4().hex
        send(ws, "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
             metadata={"version": "1.0.0"})
        asks = b'{"comm_id": "%s", "data": {"method": "request_states"}, "pad": "\xff"}' % control.encode()
        for _ in range(MAX_STATE_REQUESTS + 1):
            ws.send(v1_frame("comm_msg", asks), opcode=websocket.ABNF.OPCODE_BINARY)
    elif what == "a 1 MB widget update":  # one of the page's own widgets holds whatever it is set to
        send(ws, "comm_msg", {"comm_id": uuid.uuid4().hex, "data": {"method": "update", "state": {"value": "A" * 2**20}}})
    elif what == "content that is not JSON":  # the kernel logs a traceback for each
        ws.send(v1_frame("kernel_info_request", b"{"), opcode=websocket.ABNF.OPCODE_BINARY)
    elif what == "a replayed message":  # the kernel logs a traceback for each replay
        frame = v1_frame("kernel_info_request", {})
        for _ in range(2):
            ws.send(frame, opcode=websocket.ABNF.OPCODE_BINARY)
    else:
        held = [ws] + [channels(url, kernel, jar=jar) for _ in range(MAX_SOCKETS - 1)]
        ws = channels(url, kernel, jar=jar)
    assert is_closed(ws), f"{what}: the socket stays open"
    if what == "a socket more than a kernel may have":
        assert all(not is_closed(h, within=0.5) for h in held), "the kernel's other sockets were closed"
        for h in held:
            h.close()
    assert wait_for(lambda: kernel_answers(url, kernel, jar), 20), "the visitor's kernel no longer answers"
    assert answers_health(url)
    assert "Closing the websocket of kernel" in log.read_text()


@pytest.mark.parametrize("query", ["template=nonexistent", "template=../../../../etc", "theme=nonexistent"])
def test_the_query_string_cannot_choose_another_template_or_theme(server, query):
    """Voila lets `?template=` and `?theme=` pick any template by name (a missing one left a blank page that
    never finished, a path answered 500): voila.json turns both off, so the page is the page."""
    url, log, _ = server
    kernel, jar = visitor_page(url, path=f"/?{query}")
    assert get(url + f"/api/kernels/{kernel}", jar=jar)[0] == 200
    assert "TemplateNotFound" not in log.read_text()


# A kernel id is not a password: only the visitor whose page a kernel was bound to may use it.

def visitor_page(url: str, headers: dict | None = None, path: str = "/") -> tuple[str, http.cookiejar.CookieJar]:
    """A new visitor (their own cookie jar) loads the page: (their kernel id, their jar)."""
    jar = http.cookiejar.CookieJar()
    status, page = get(url + path, headers, jar=jar)
    assert status == 200
    return kernel_id(page), jar


def forged_cookie(jar: http.cookiejar.CookieJar) -> str:
    """The owner's visitor cookie remade with the owner's very name, signed with a secret the attacker made up."""
    value = next(c.value for c in jar if c.name == "bear_visitor")
    user = json.loads(__import__("base64").b64decode(value.split("|")[4].split(":", 1)[1]))
    return "bear_visitor=" + create_signed_value(os.urandom(32), "bear_visitor", json.dumps(user)).decode()


def attacks(url: str, owner: http.cookiejar.CookieJar) -> dict[str, str | None]:
    """The Cookie header of each kind of stranger: none, a forged visitor cookie, a real one of their own."""
    _, stranger = visitor_page(url)
    return {"no-cookie": None, "forged-visitor-cookie": forged_cookie(owner),
            "their-own-visitor-cookie": cookie_header(stranger)}


@pytest.mark.parametrize("who", ["no-cookie", "forged-visitor-cookie", "their-own-visitor-cookie"])
def test_another_visitors_kernel_id_alone_reads_attaches_and_stops_nothing(server, who):
    url, log, _ = server
    kernel, owner = visitor_page(url)
    cookie = attacks(url, owner)[who]
    # A self-made _xsrf cookie with the matching header passes jupyter_server's double-submit check.
    headers = {"Cookie": "; ".join(filter(None, [cookie, "_xsrf=mine"])), "X-XSRFToken": "mine"}
    status, _ = request(url + f"/api/kernels/{kernel}", headers=headers, jar=None)
    assert status == 403, "another visitor read the kernel's model"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        channels(url, kernel, cookie=headers["Cookie"], jar=None)
    assert refused.value.status_code == 403, "another visitor attached to the kernel's channels"
    for method, route in [("POST", f"/voila/api/shutdown/{kernel}"), ("DELETE", f"/api/kernels/{kernel}"),
                          ("POST", f"/api/kernels/{kernel}/interrupt"), ("POST", f"/api/kernels/{kernel}/restart")]:
        status, _ = request(url + route, method, headers, jar=None, data=b"" if method == "POST" else None)
        assert status in (403, 404, 405), f"{method} {route} answered {status}"
    assert get(url + f"/api/kernels/{kernel}", jar=owner)[0] == 200, "the owner's kernel was stopped"
    assert kernel_answers(url, kernel, owner), "the owner's kernel no longer answers its owner"
    assert "not its kernel's visitor" in log.read_text()


def test_the_visitor_cookie_is_signed_httponly_samesite_and_secure_behind_tls(server):
    url, _, _ = server
    for headers, secure in [({}, False), ({"X-Forwarded-Proto": "https"}, True)]:
        with urllib.request.urlopen(urllib.request.Request(url + "/", headers=headers), timeout=60) as r:
            cookie = next(c for c in r.headers.get_all("Set-Cookie") if c.startswith("bear_visitor="))
            r.read()
        flags = {f.strip().lower() for f in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax"} <= flags and ("secure" in flags) == secure, cookie


def test_the_owners_page_in_two_tabs_of_one_browser_both_keep_working(server):
    require_browser()
    url, _, _ = server
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 900, "height": 900})
        tabs = [context.new_page() for _ in range(2)]  # one browser, one visitor cookie, a kernel per tab
        for tab in tabs:
            tab.goto(url)
            tab.locator(WIDGET_BUTTON).wait_for(timeout=120_000)
        cookie = next(c for c in context.cookies() if c["name"] == "bear_visitor")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        for i, tab in enumerate(tabs):
            upload_file(tab, f"tab{i}.jpg", encode(photo(seed=i), "JPEG"), "image/jpeg")
        for i, tab in enumerate(tabs):
            assert "Prediction: " in wait_card(tab, f"tab{i}.jpg")
        time.sleep(9)  # two heartbeats: both tabs still answered
        for i, tab in enumerate(tabs):
            upload_file(tab, f"again{i}.jpg", encode(photo(seed=i + 5), "JPEG"), "image/jpeg")
            assert "Prediction: " in wait_card(tab, f"again{i}.jpg")
            assert tab.locator(".bear-lost").count() == 0


def test_a_page_left_shuts_its_kernel_down_at_once_and_only_its_own(server):
    """Voila's page asks for its kernel's shutdown as it unloads; without the _xsrf cookie that request was refused
    (403) and every kernel of a page left or reloaded stayed until the idle cull, 10 minutes of memory each."""
    require_browser()
    url, log, _ = server
    with chromium() as browser:
        page, other = open_app(browser, url), open_app(browser, url)
        kernel, others = kernel_id(page.content().encode()), kernel_id(other.content().encode())
        header = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
        assert "_xsrf=" in header
        assert get(url + f"/api/kernels/{kernel}", {"Cookie": header}, jar=None)[0] == 200
        page.goto("about:blank")  # the visitor leaves: beforeunload
        closed = lambda: get(url + f"/api/kernels/{kernel}", {"Cookie": header}, jar=None)  # noqa: E731
        assert wait_for(lambda: closed()[0] == 410, 20, step=0.2), closed()
        assert json.loads(closed()[1])["message"] == "closed"  # by its page, not culled
        upload_file(other, "still.jpg", encode(photo(seed=3), "JPEG"), "image/jpeg")  # another visitor's page
        assert "Prediction: " in wait_card(other, "still.jpg") and others != kernel
    assert "_xsrf' argument missing" not in log.read_text()


def test_a_tab_closed_without_beforeunload_gives_its_kernel_back_too(server):
    """Safari on iPhones never fires beforeunload, a browser closing a tab need not, and Voila listens for it only
    once its widgets are up: those kernels stayed until the idle cull. The page gives its kernel back on pagehide
    too, once: no second shutdown when both fire."""
    require_browser()
    url, log, _ = server
    kernels = []
    with chromium() as browser:
        for asks, widgets in [(False, True), (True, True), (True, False)]:
            if widgets:
                page = open_app(browser, url)
            else:  # left before Voila's script has set up its widgets (here: never, as it is not let through)
                page = browser.new_context().new_page()
                page.route("**/voila.js", lambda route: route.abort())
                page.goto(url, wait_until="load", timeout=120_000)
            kernel = kernel_id(page.content().encode())
            header = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
            page.close(run_before_unload=asks)  # False: no beforeunload, as a phone closing a tab
            closed = lambda: get(url + f"/api/kernels/{kernel}", {"Cookie": header}, jar=None)  # noqa: E731
            assert wait_for(lambda: closed()[0] == 410, 20, step=0.2), (asks, widgets, closed())
            assert json.loads(closed()[1])["message"] == "closed"
            kernels.append(kernel)
    time.sleep(1)  # a second shutdown would be refused (403) or not found (404)
    refused = [line for line in log.read_text().splitlines() if any(k in line for k in kernels)
               and ("does not exist" in line or line.startswith(("403 POST", "404 POST")))]  # (ids hold digits too)
    assert not refused, refused


IDLE_S = 12  # the test servers' idle cull, in seconds: long enough for a page to load on a busy machine


def test_a_tab_left_open_and_idle_has_its_kernel_culled_and_says_so_while_the_pool_stays():
    require_browser()
    cull = [f"--MappingKernelManager.cull_idle_timeout={IDLE_S}", "--MappingKernelManager.cull_interval=1"]
    with voila(*cull, "--VoilaConfiguration.default_pool_size=1") as (url, log, proc), chromium() as browser:
        assert wait_for(lambda: len(kernels(proc)) == 1, 60), "no preheated kernel"
        page = open_app(browser, url)  # takes the preheated kernel; the pool starts another
        upload_file(page, "bear.jpg", encode(photo(seed=3), "JPEG"), "image/jpeg")
        assert "Prediction: " in wait_card(page, "bear.jpg")
        ended = f"This session ended after {IDLE_S} seconds without activity. Reload the page to start again."
        page.get_by_text(ended).wait_for(timeout=60_000)  # the tab stayed open, its socket too
        assert page.locator("#rendered_cells button.bear-upload").is_disabled()
        assert "Culling 'idle' kernel" in log.read_text() and "with 1 connections" in log.read_text()
        # The pool's new kernel, idle for longer than that by now, is kept for the next visitor.
        assert wait_for(lambda: len(kernels(proc)) == 1, 30)
        pool = kernels(proc)[0].pid
        time.sleep(IDLE_S + 3)
        assert [k.pid for k in kernels(proc)] == [pool]
        page.reload()
        page.locator("#rendered_cells button.bear-upload").wait_for(timeout=120_000)  # a reload starts again


def test_a_page_that_takes_a_kernel_from_the_pool_starts_its_visit_then():
    """A kernel preheated long before its page came has its last activity set when the page takes it: left at
    its preheating, the idle cull could end it before the page connects (a page that never shows its button)."""
    from datetime import datetime, timezone

    with voila("--VoilaConfiguration.default_pool_size=1") as (url, _, proc):
        assert wait_for(lambda: len(kernels(proc)) == 1, 60), "no preheated kernel"
        time.sleep(IDLE_S + 3)  # it waits in the pool, its notebook run long finished
        before = datetime.now(timezone.utc)
        kernel, jar = visitor_page(url)
        status, body = get(url + f"/api/kernels/{kernel}", jar=jar)
        assert status == 200
        assert datetime.fromisoformat(json.loads(body)["last_activity"].replace("Z", "+00:00")) >= before


def test_a_later_answered_heartbeat_clears_connection_lost():
    require_browser()
    with voila() as (url, _, proc), chromium() as browser:
        page = open_app(browser, url)
        os.kill(proc.pid, signal.SIGSTOP)  # the server stops answering, without closing anything
        try:
            page.get_by_text(LOST).wait_for(timeout=60_000)
            assert page.locator("#rendered_cells button.bear-upload").is_disabled()
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        page.get_by_text(LOST).wait_for(state="detached", timeout=30_000)
        upload_file(page, "after.jpg", encode(photo(seed=4), "JPEG"), "image/jpeg")
        assert "Prediction: " in wait_card(page, "after.jpg")


def request_details(url: str, kernel: str, within: float = 3.0) -> str | None:
    """What Voila's /voila/query/<kernel> socket says of the page request that kernel was handed to, if anything."""
    ws = websocket.create_connection(url.replace("http", "ws", 1) + f"/voila/query/{kernel}", timeout=within)
    try:
        return ws.recv()
    except websocket.WebSocketTimeoutException:
        return None
    finally:
        ws.close()


def test_a_pages_request_details_are_forgotten_when_its_kernel_ends(server):
    url, _, _ = server
    long_query = "x" * 30_000
    kernel, jar = visitor_page(url, path=f"/?q={long_query}")
    assert long_query in (request_details(url, kernel) or ""), "the page did not come from the pool"
    request(url + f"/api/kernels/{kernel}", "DELETE", {"X-XSRFToken": "x", "Cookie": f"{cookie_header(jar)}; _xsrf=x"},
            jar=None)
    assert wait_for(lambda: request_details(url, kernel, within=1.0) is None, 30), "kept after its kernel ended"
    status, body = get(url + f"/api/kernels/{kernel}", jar=jar)
    assert status == 410 and json.loads(body)["message"] == "closed"  # by its visitor: not "idle"
    assert answers_health(url)


LOST = "The connection to the server was lost. Please reload the page to keep going."
PER_ADDRESS = json.loads((ROOT / "voila.json").read_text())["VisitorKernels"]["kernels_per_address"]


def test_twelve_pages_from_one_address_leave_it_at_most_the_cap_of_kernels(server):
    url, log, proc = server
    proxied = {"X-Forwarded-For": "203.0.113.9"}  # as HAProxy on this machine says it (deploy/haproxy.cfg)
    before = len(kernels(proc))
    pages = [visitor_page(url, proxied) for _ in range(12)]  # twelve visitors behind one address
    assert wait_for(lambda: len(kernels(proc)) <= before + PER_ADDRESS, 60), len(kernels(proc))
    first, last = pages[0], pages[-1]
    status, body = get(url + f"/api/kernels/{first[0]}", jar=first[1])
    assert status == 410 and json.loads(body)["message"] == "crowded"  # its tab says why its session ended
    assert get(url + f"/api/kernels/{last[0]}", jar=last[1])[0] == 200
    assert "203.0.113.9 holds 9 kernels" in log.read_text()
    # Another address is not counted with it.
    other, jar = visitor_page(url, {"X-Forwarded-For": "198.51.100.4"})
    assert get(url + f"/api/kernels/{other}", jar=jar)[0] == 200
    for kernel, jar in pages:  # give the server back what this test took
        request(url + f"/api/kernels/{kernel}", "DELETE", {"X-XSRFToken": "x", "Cookie": f"{cookie_header(jar)}; _xsrf=x"},
                jar=None)


def test_only_a_trusted_proxy_names_the_visitors_address(monkeypatch):
    """Behind a proxy (HAProxy on this machine; ingress-nginx in a cluster's pod network, BEAR_TRUSTED_PROXIES)
    the visitor's address is the last X-Forwarded-For entry, the proxy's own; anyone else's header is ignored."""
    from tornado.httputil import HTTPHeaders, HTTPServerRequest

    from bear_classifier.server import addresses

    def request(peer: str, forwarded: str) -> HTTPServerRequest:
        r = HTTPServerRequest(method="GET", uri="/", headers=HTTPHeaders({"X-Forwarded-For": forwarded,
                                                                          "X-Forwarded-Proto": "https"}))
        r.remote_ip = peer
        return r

    monkeypatch.setattr(addresses, "TRUSTED_PROXIES", addresses.networks("10.0.0.0/8, fd00::/8"))
    for peer in ("127.0.0.1", "10.42.1.7", "fd00::5"):  # HAProxy here; the ingress in the pod network
        assert addresses.client_address(request(peer, "6.6.6.6, 203.0.113.9")) == "203.0.113.9"
        assert addresses.behind_tls(request(peer, "203.0.113.9"))
    for peer in ("198.51.100.7", "11.0.0.1"):  # a visitor's own word
        assert addresses.client_address(request(peer, "203.0.113.9")) == peer
        assert not addresses.behind_tls(request(peer, "203.0.113.9"))
    with pytest.raises(ValueError, match="'ten' is not a network"):
        addresses.networks("10.0.0.0/8, ten")
