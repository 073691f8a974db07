"""The "Use via API" page: the routes, the limits, and curl and Python examples filled in with this server's own
address. Plain HTML, no script of any kind (its Content-Security-Policy forbids them), nothing from another site."""
from __future__ import annotations

from html import escape

from .limits import Limits

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def examples(base: str, token: bool) -> dict[str, str]:
    """The examples the page shows, as text: `base` is the server's address with its prefix, ending in /."""
    auth = ' -H "Authorization: Bearer $BEAR_API_TOKEN"' if token else ""
    client_token = ", token=os.environ[\"BEAR_API_TOKEN\"]" if token else ""
    plain_auth = ', "Authorization": "Bearer " + os.environ["BEAR_API_TOKEN"]' if token else ""
    return {
        "curl": f"curl{auth} -F image=@photo.jpg {base}api/classify",
        "curl_raw": f"curl{auth} --data-binary @photo.jpg -H \"Content-Type: image/jpeg\" \"{base}api/classify?heatmap=1\"",
        "python": ("import os\n" if token else "") + "from bear_classifier import Client  # pip install this project\n\n"
                  f"client = Client(\"{base}\"{client_token})\n"
                  "answer = client.classify(\"photo.jpg\")\n"
                  "print(answer.words, answer.probability)",
        "python_plain": ("import json, os, urllib.request\n\n" if token else "import json, urllib.request\n\n")
                        + "with open(\"photo.jpg\", \"rb\") as f:\n"
                        f"    request = urllib.request.Request(\"{base}api/classify\", data=f.read(),\n"
                        f"                                     headers={{\"Content-Type\": \"image/jpeg\"{plain_auth}}})\n"
                        "print(json.load(urllib.request.urlopen(request))[\"results\"][0])",
    }


def page(base: str, limits: Limits, classes: list[tuple[str, str]] | None) -> str:
    """The page's HTML. `classes`: (label, words) of the served model, "none of these" last; None while it loads."""
    ex = {k: escape(v) for k, v in examples(base, bool(limits.token)).items()}
    answer = ("<p>The labels: " + ", ".join(f"<code>{escape(label)}</code> ({escape(words)})" for label, words in classes)
              + ".</p>" if classes else "")
    rate = f"{limits.per_minute} requests a minute per address" if limits.per_minute else "no limit per address"
    token = ("<p>This server wants a token: send <code>Authorization: Bearer &lt;token&gt;</code> "
             "(its owner gives it).</p>" if limits.token else "")
    b = escape(base)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Use via API</title>
<style>
  body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 1.5rem auto; padding: 0 1rem; color: #1b1b1b; }}
  pre {{ background: #f3f4f6; padding: .75rem; overflow-x: auto; border-radius: 6px; }}
  code {{ font-size: 13px; }} a {{ color: #0b3d91; }}
</style></head>
<body><main>
<h1>Use via API</h1>
<p>Programs can ask this server what the page answers: send photos, get JSON back. <a href="{b}">Back to the page</a>.</p>
{token}
<h2>curl</h2>
<pre><code>{ex["curl"]}</code></pre>
<p>Several photos at once: one <code>-F image=@...</code> per photo. The photo as the body, with where the model looked
(a base64 PNG):</p>
<pre><code>{ex["curl_raw"]}</code></pre>
<h2>Python</h2>
<pre><code>{ex["python"]}</code></pre>
<p>Or with the standard library alone:</p>
<pre><code>{ex["python_plain"]}</code></pre>
<p>From the command line: <code>python -m bear_classifier predict --url {b} photo.jpg</code></p>
<h2>The answer</h2>
<p>For each photo: <code>label</code>, <code>words</code> (the page's name for it), <code>probability</code>,
<code>probabilities</code> (every label's), <code>none_of_these</code>, <code>model</code> (its version's name, sha256
and date), <code>person</code> (a sentence where the photo is mainly a person),
and with <code>?heatmap=1</code> <code>heatmap_png</code>. A file that is no photo gets <code>error</code>: the
sentence the page would show.</p>
{answer}
<h2>Routes and limits</h2>
<ul>
  <li><code>POST {b}api/classify</code>: up to {limits.max_images} photos, {limits.max_bytes / 2**20:g} MB in all</li>
  <li><code>GET {b}api/model</code>: the classes, the model card's figures, the version</li>
  <li><code>GET {b}api/health</code> and <code>GET {b}api/ready</code> (the model is loaded)</li>
  <li><a href="{b}api/openapi.json"><code>GET {b}api/openapi.json</code></a>: the OpenAPI 3.1 document</li>
</ul>
<p>{rate}. When the server is busy it answers 503, and 429 when an address asks too often: both say in
<code>Retry-After</code> how many seconds to wait. The Python client waits and tries again by itself.</p>
</main></body></html>
"""
