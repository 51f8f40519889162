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
    components["HeartbeatOffer"] = {
        "type": "object",
        "properties": {
            "key": {"type": "string", "format": "byte", "description": "HMAC-SHA256 key (base64)"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "UDP port"},
            "interval": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds between beats"},
        },
        "required": ["key", "port", "interval"],
    }
    components["Matcher"] = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "value": {"type": "string"},
            "isRegex": {"type": "boolean", "default": False},
            "isEqual": {"type": "boolean", "default": True},
        },
        "required": ["name", "value"],
    }
    components["Silence"] = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "matchers": {"type": "array", "items": {"$ref": "#/components/schemas/Matcher"}},
            "startsAt": {"type": "string", "format": "date-time"},
            "endsAt": {"type": "string", "format": "date-time"},
            "createdBy": {"type": "string"},
            "comment": {"type": "string"},
            "status": {"type": "object"},
        },
        "required": ["id", "matchers", "startsAt", "endsAt", "createdBy"],
    }
    components["NewSilence"] = {
        "type": "object",
        "properties": {
            "matchers": {
                "type": "array",
                "minItems": 1,
                "items": {"oneOf": [{"$ref": "#/components/schemas/Matcher"}, {"type": "string"}]},
                "description": 'Matcher objects or "name=value" / "name=~regex" strings',
            },
            "startsAt": {"type": "string", "format": "date-time"},
            "endsAt": {"type": "string", "format": "date-time"},
            "duration": {"type": "string", "description": 'e.g. "1h"; instead of endsAt'},
            "createdBy": {"type": "string", "minLength": 1},
            "comment": {"type": "string"},
        },
        "required": ["matchers", "createdBy"],
        "additionalProperties": False,
    }
    components["Alert"] = {
        "type": "object",
        "properties": {
            "fingerprint": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "firing"]},
            "status": {
                "type": "object",
                "description": "Whether the alert is silenced, inhibited or acknowledged, and by what",
            },
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
            "securitySchemes": {
                "agentToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "[api] admin_token_file"},
            },
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
            "/api/v1/heartbeat": {
                "post": {
                    "summary": "The calling agent's heartbeat key, the UDP port and the beat interval",
                    "description": "The key authenticates the agent's UDP heartbeats (docs/heartbeat.md); "
                    "it changes when the agent's token is re-issued and is kept in memory only.",
                    "security": [{"agentToken": []}],
                    "responses": {
                        "200": {
                            "description": "Where and how to send heartbeats (Cache-Control: no-store)",
                            "content": {_JSON: {"schema": {"$ref": "#/components/schemas/HeartbeatOffer"}}},
                        },
                        "401": _error("Missing or invalid token"),
                        "404": _error("Heartbeats are off on this collector"),
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
            "/api/v1/alerts/{fingerprint}/ack": {
                "post": {
                    "summary": "Acknowledge an active alert: stops repeats and escalation for it",
                    "security": [{"adminToken": []}],
                    "parameters": [
                        {"name": "fingerprint", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "by": {"type": "string", "minLength": 1},
                                        "comment": {"type": "string"},
                                    },
                                    "required": ["by"],
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The acknowledged alert",
                            "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Alert"}}},
                        },
                        "401": _error("Missing or invalid admin token"),
                        "404": _error("No active alert with that fingerprint"),
                        "422": _error("A field is missing or of the wrong type; field names it"),
                        "429": _error("Too many failed logins from this address: locked out for 10 minutes"),
                    },
                }
            },
            "/api/v1/silences": {
                "get": {
                    "summary": "Active and pending silences (all=true: expired too)",
                    "parameters": [{"name": "all", "in": "query", "schema": {"type": "boolean"}}],
                    "responses": {
                        "200": {
                            "description": "Silences",
                            "content": {
                                _JSON: {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Silence"},
                                    }
                                }
                            },
                        }
                    },
                },
                "post": {
                    "summary": "Create a silence",
                    "security": [{"adminToken": []}],
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/NewSilence"}}},
                    },
                    "responses": {
                        "201": {
                            "description": "The new silence",
                            "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Silence"}}},
                        },
                        "401": _error("Missing or invalid admin token"),
                        "422": _error("A field is missing or invalid; field names it"),
                        "429": _error("Too many failed logins from this address: locked out for 10 minutes"),
                    },
                },
            },
            "/api/v1/silences/{silence_id}": {
                "delete": {
                    "summary": "Expire a silence now (it stays listed as expired)",
                    "security": [{"adminToken": []}],
                    "parameters": [
                        {"name": "silence_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {"description": "Expired"},
                        "401": _error("Missing or invalid admin token"),
                        "404": _error("No active or pending silence with that id"),
                    },
                }
            },
            "/positions/{agent}": {
                "get": {
                    "summary": "One position: identity, last report, latest series, active alerts",
                    "parameters": [
                        {"name": "agent", "in": "path", "required": True, "schema": {"type": "string"}},
                        {
                            "name": "samples",
                            "in": "query",
                            "description": "Add `samples`: this metric's stored samples (the newest 10000)",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "events",
                            "in": "query",
                            "description": "Add `events`: the stored events of this type (the oldest 1000)",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "since",
                            "in": "query",
                            "description": "Only samples and events from this time on (Unix ms)",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Position detail",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        },
                        "400": _error("A query parameter is malformed (the error names it)"),
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
