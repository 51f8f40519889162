"""The OpenAPI 3.1 document of the collector's HTTP API (``GET /api/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

import msgspec

from lifeline_wire import Envelope, IngestResponse

_JSON = "application/json"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def document(version: str) -> dict[str, Any]:
    (envelope, response), components = msgspec.json.schema_components(
        [Envelope, IngestResponse], ref_template="#/components/schemas/{name}"
    )
    components["Error"] = {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "What is wrong, in words"},
            "field": {"type": "string", "description": "JSON path of the bad field, e.g. $.batches[0].seq"},
        },
        "required": ["error"],
    }
    components["Alert"] = {
        "type": "object",
        "properties": {
            "fingerprint": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "firing"]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "startsAt": {"type": "string", "format": "date-time"},
            "endsAt": {"type": "string", "format": "date-time"},
        },
        "required": ["fingerprint", "state", "labels", "annotations", "startsAt"],
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lifeline collector",
            "version": version,
            "description": "Ingest from Lifeline agents, alerts and position detail for supervisors.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"agentToken": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/ingest": {
                "post": {
                    "summary": "Deliver one or more batches from one agent (wire contract v1)",
                    "security": [{"agentToken": []}],
                    "requestBody": {"required": True, "content": {_JSON: {"schema": envelope}}},
                    "responses": {
                        "200": {
                            "description": "One result per batch: accepted, duplicate or rejected",
                            "content": {_JSON: {"schema": response}},
                        },
                        "400": _error("The body is not JSON (truncated or malformed)"),
                        "401": _error("Missing or invalid token"),
                        "403": _error("A batch belongs to another agent than the token's"),
                        "413": _error("Body larger than server.max_body_bytes: split the batches"),
                        "422": _error("JSON that breaks the contract; field names the bad field"),
                        "503": _error("Store unavailable: retry after Retry-After seconds"),
                    },
                }
            },
            "/api/v1/alerts": {
                "get": {
                    "summary": "Active alerts (pending and firing)",
                    "responses": {
                        "200": {
                            "description": "Active alerts, oldest first",
                            "content": {
                                _JSON: {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Alert"},
                                    }
                                }
                            },
                        }
                    },
                }
            },
            "/positions/{agent}": {
                "get": {
                    "summary": "One position: identity, last report, latest series, active alerts",
                    "parameters": [
                        {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "Position detail",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        },
                        "404": _error("No such agent"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus exposition of every agent's latest series and the collector's own",
                    "responses": {"200": {"description": "Prometheus text format 0.0.4"}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and store check",
                    "responses": {"200": {"description": "ok"}, "503": {"description": "store unavailable"}},
                }
            },
        },
    }
