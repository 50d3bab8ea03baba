"""Home Assistant MQTT discovery for each stream's prediction (``--ha-discovery PREFIX``).

When a stream is first seen, the daemon publishes one retained message to
``PREFIX/sensor/stepwise/<object id>/config`` (Home Assistant's discovery topic; its
default PREFIX is ``homeassistant``): an MQTT sensor whose state is the prediction's
``label`` and whose attributes are ``y``, ``step`` and ``seq``, read from the stream's
``<topic prefix>/<stream>/prediction`` topic. Retained, so Home Assistant finds every
stream also after its own restart; the object id is the topic prefix and stream id with
every character outside ``[A-Za-z0-9_-]`` made ``_``.
"""
from __future__ import annotations

import json
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def object_id(topic_prefix: str, stream: str) -> str:
    return _UNSAFE.sub("_", f"{topic_prefix}_{stream}")


def discovery_topic(discovery_prefix: str, topic_prefix: str, stream: str) -> str:
    return f"{discovery_prefix}/sensor/stepwise/{object_id(topic_prefix, stream)}/config"


def discovery_config(topic_prefix: str, stream: str, model_sha256: str) -> bytes:
    """The retained config message of ``stream``'s prediction sensor (JSON bytes)."""
    oid = object_id(topic_prefix, stream)
    state = f"{topic_prefix}/{stream}/prediction"
    return json.dumps({
        "name": "prediction",
        "unique_id": f"stepwise_{oid}",
        "object_id": f"stepwise_{oid}",
        "state_topic": state,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": state,
        "json_attributes_template":
            "{{ {'y': value_json.y, 'step': value_json.step, 'seq': value_json.seq} | tojson }}",
        "device": {"identifiers": [f"stepwise_{oid}"], "name": stream,
                   "manufacturer": "stepwise", "model": f"step model {model_sha256[:12]}"},
        "icon": "mdi:chart-bell-curve-cumulative",
    }, sort_keys=True).encode("utf-8")
