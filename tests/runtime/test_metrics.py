"""The Prometheus endpoint, scraped over HTTP and parsed with the client's own parser."""
from __future__ import annotations

import urllib.request

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from runtime.errors import ConfigError  # noqa: E402
from runtime.metrics import Metrics, parse_hostport  # noqa: E402


def scrape(host, port) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    return {(s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_endpoint_serves_counters_gauges_histograms():
    m = Metrics()
    host, port = m.serve("127.0.0.1", 0)
    try:
        m.samples.inc(5)
        m.predictions.inc(4)
        m.rejects.labels("non_finite").inc()
        m.active_streams.set(3)
        m.step_seconds.observe(0.0003)
        m.checkpointed(0.02, True)
        m.checkpointed(0.0, False)
        got = scrape(host, port)
    finally:
        m.close()
    assert got["stepwise_samples_total"] == 5 and got["stepwise_predictions_total"] == 4
    assert got["stepwise_rejects_total|reason=non_finite"] == 1
    assert got["stepwise_active_streams"] == 3
    assert got["stepwise_step_seconds_count"] == 1
    assert got["stepwise_step_seconds_bucket|le=0.0005"] == 1
    assert got["stepwise_step_seconds_bucket|le=0.00025"] == 0
    assert got["stepwise_checkpoint_failures_total"] == 1
    assert 0 <= got["stepwise_checkpoint_age_seconds"] < 5
    assert not any("stream=" in k for k in got)


def test_hostport():
    assert parse_hostport("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_hostport(":0") == ("0.0.0.0", 0)
    for bad in ("9100", "h:x", "h:70000"):
        with pytest.raises(ConfigError, match="--metrics"):
            parse_hostport(bad)
