"""Sends metrics and logs to substrate with the OpenTelemetry Python SDK (OTLP/HTTP protobuf).

Usage: otlp_send.py <base url> <api key>
A counter `orders` (+5 then +2, labelled shop=berlin), a histogram `checkout_seconds` (three
observations), a histogram `rtt_seconds` aggregated by a View as an exponential histogram of
at most 20 buckets (nine observations: 0, 0.5, 1, 1.5, 2, 3, 4, 100, 100, which the SDK fits
at scale 1) and two log records (INFO, ERROR) from service `shop`; every export is flushed
before exit, and the exit code is non-zero when an export failed.
"""

import logging
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource


def main() -> int:
    base, key = sys.argv[1], sys.argv[2]
    headers = {"x-api-key": key}
    resource = Resource.create({"service.name": "shop", "service.instance.id": "i-1"})

    reader = InMemoryMetricReader()
    exponential = View(
        instrument_name="rtt_seconds",
        aggregation=ExponentialBucketHistogramAggregation(max_size=20),
    )
    meter = MeterProvider(
        resource=resource, metric_readers=[reader], views=[exponential]
    ).get_meter("test")
    orders = meter.create_counter("orders")
    orders.add(5, {"shop": "berlin"})
    orders.add(2, {"shop": "berlin"})
    latency = meter.create_histogram("checkout_seconds")
    for v in (0.2, 0.4, 3.0):
        latency.record(v)
    rtt = meter.create_histogram("rtt_seconds", unit="s")
    for v in (0, 0.5, 1, 1.5, 2, 3, 4, 100, 100):
        rtt.record(v)
    data = reader.get_metrics_data()
    exporter = OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers)
    if exporter.export(data) != MetricExportResult.SUCCESS:
        print("metric export failed", file=sys.stderr)
        return 1

    log_exporter = OTLPLogExporter(endpoint=f"{base}/v1/logs", headers=headers)
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    log = logging.getLogger("shop")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))
    log.info("order placed")
    log.error("payment declined")
    provider.force_flush()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
