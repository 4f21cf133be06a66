import json

from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from apps.devices.services import api_key_issue
from tests.devices.factories import DeviceFactory, GatewayFactory, MetricDefinitionFactory


def scrape(client) -> dict:
    """/metrics as {(sample name, frozenset of labels): value}."""
    text = client.get("/metrics").content.decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_http_ingest_by_outcome(client, site_a):
    device = DeviceFactory(site=site_a, uid="hp-metrics")
    MetricDefinitionFactory(device_type=device.device_type, key="supply_temp", min_value=-50, max_value=150)
    _, key = api_key_issue(gateway=GatewayFactory(site=site_a))
    accepted = ("fieldwatch_ingest_readings_accepted_total", frozenset({("source", "http")}))
    rejected = (
        "fieldwatch_ingest_rejected_total",
        frozenset({("source", "http"), ("reason", "unknown_metric")}),
    )
    before = scrape(client)

    body = [{"device": "hp-metrics", "values": {"supply_temp": 20}}, {"device": "hp-metrics", "values": {"x": 1}}]
    response = client.post(
        "/api/v1/ingest", json.dumps(body), content_type="application/json", headers={"X-API-Key": key}
    )
    assert response.status_code == 202

    after = scrape(client)
    assert after[accepted] - before.get(accepted, 0) == 1
    assert after[rejected] - before.get(rejected, 0) == 1


@override_settings(METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"])
def test_metrics_are_refused_outside_the_monitoring_network(client):
    assert client.get("/metrics").status_code == 403
