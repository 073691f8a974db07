"""The API described for programs: an OpenAPI 3.1 document, its server the address the client reached."""
from __future__ import annotations

from .. import __version__

ERROR = {"$ref": "#/components/schemas/Error"}
PROBLEMS = {  # the answers every call may get, besides its own
    "401": "The server wants its token (BEAR_API_TOKEN): send `Authorization: Bearer <token>`.",
    "429": "Too many requests from this address: wait the seconds in Retry-After.",
    "503": "The model is loading, or every turn is taken: wait the seconds in Retry-After.",
}


def _errors(*codes: str, **more: str) -> dict:
    said = {**{c: PROBLEMS[c] for c in codes}, **{c.lstrip("_"): d for c, d in more.items()}}
    return {code: {"description": text, "content": {"application/json": {"schema": ERROR}}}
            for code, text in said.items()}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SCHEMAS = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string", "description": "What went wrong and what to do, in a sentence"},
                             "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}}}},
    "Version": {"type": "object", "properties": {
        "name": {"type": "string", "description": "the version's name, as `models list` shows it (day-sha256 prefix)"},
        "sha256": {"type": "string", "description": "sha256 of the served model file, as its model card vouches"},
        "date": {"type": ["string", "null"], "description": "the day the model was exported (ISO 8601)"}}},
    "Result": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "description": "the file's name (multipart), ?name=, or \"image\""},
        "label": {"type": "string", "description": "the model's label: one of the classes, or \"none of these\"'s"},
        "words": {"type": "string", "description": "the page's words for the label (\"Grizzly bear\")"},
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"},
                          "description": "every label's probability, \"none of these\" last"},
        "none_of_these": {"type": "boolean", "description": "the image shows none of the classes"},
        "person": {"type": "string", "description": "where a \"none of these\" image is mainly a person: the page's "
                                                    "sentence for it (\"That looks like a person, not a bear.\")"},
        "model": {"$ref": "#/components/schemas/Version"},
        "heatmap_png": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png",
                        "description": "where the model looked (brighter: more), with ?heatmap=1"},
        "error": {"type": "string", "description": "why this file got no answer (the page's sentence)"}}},
}


def document(server: str, max_images: int, max_mb: float) -> dict:
    """The OpenAPI 3.1 document of this API, served from `server` (its scheme, host and prefix)."""
    heatmap = {"name": "heatmap", "in": "query", "required": False, "schema": {"type": "boolean"},
               "description": "add each image's heatmap as a base64 PNG"}
    image = {"type": "string", "contentMediaType": "image/*"}
    classify = {
        "summary": "Classify images", "operationId": "classify",
        "description": f"One image as the body, or up to {max_images} as multipart/form-data files; at most "
                       f"{max_mb:g} MB in all. Formats: JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF.",
        "parameters": [heatmap, {"name": "name", "in": "query", "required": False, "schema": {"type": "string"},
                                 "description": "the name to give a body's image in the answer"}],
        "requestBody": {"required": True, "content": {
            "image/*": {"schema": image},
            "application/octet-stream": {"schema": image},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "array", "items": image, "maxItems": max_images}}}}}},
        "responses": {
            "200": _json({"type": "object", "required": ["results"], "properties": {"results": {
                "type": "array", "items": {"$ref": "#/components/schemas/Result"}}}},
                "Each image's answer, in order; a file that is no image has `error` instead"),
            **_errors("401", "429", "503", _400="No image in the request",
                      _413="The body is too large, or it has too many images",
                      _415="Not an image, nor multipart/form-data",
                      _422="No image could be classified: `error` is the first file's sentence"),
        }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "bear_classifier", "version": __version__,
                 "description": "Classify photos with the model this page serves. Limits per address and per "
                                "request apply; `GET api/docs` shows examples."},
        "servers": [{"url": server}],
        "paths": {
            "/api/classify": {"post": classify},
            "/api/model": {"get": {"summary": "The classes, the model card's figures, the version",
                                   "operationId": "model", "responses": {
                                       "200": _json({"type": "object"}, "The served model"),
                                       **_errors("401", "429", "503")}}},
            "/api/health": {"get": {"summary": "The server answers (liveness)", "operationId": "health",
                                    "responses": {"200": _json({"type": "object"}, "Up")}}},
            "/api/ready": {"get": {"summary": "The model is loaded (readiness)", "operationId": "ready", "responses": {
                "200": _json({"type": "object"}, "Ready to classify"),
                **_errors(_503="The model is loading, or could not be loaded")}}},
        },
        "components": {"schemas": SCHEMAS, "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{}, {"token": []}],
    }
