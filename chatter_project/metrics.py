"""Prometheus metrics (/metrics): runs by status, tokens and cost by provider and model, latency histograms of
runs, LLM calls and tool calls (labelled as the operations dashboard groups them), event latency, and (tracing on)
the spans the OTLP collector did not take.

Run and usage figures are read from the database at scrape time, so every process reports the same totals;
event latency (persist → handed to the hub) is observed in the process that publishes."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from analytics.operations import latency_histograms
from chatter_project.health import runs_by_status, stale_runs_count, usage_by_model
from workflows.events import EVENT_LATENCY

REGISTRY = CollectorRegistry()
REGISTRY.register(EVENT_LATENCY)  # observed where events are published (workflows.events)


class DatabaseCollector:
    def collect(self):
        runs = GaugeMetricFamily("chatter_runs", "Runs by status.", labels=["status"])
        for status, count in runs_by_status().items():
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily("chatter_stale_runs", "Runs pending or running past timeout plus sweep interval.",
                                value=stale_runs_count())
        tokens = CounterMetricFamily("chatter_tokens", "Tokens reported by providers.",
                                     labels=["provider", "model", "kind"])
        cost = CounterMetricFamily("chatter_cost_usd", "Cost of LLM calls in USD.", labels=["provider", "model"])
        calls = CounterMetricFamily("chatter_llm_calls", "LLM calls.", labels=["provider", "model"])
        for row in usage_by_model():
            labels = [row["provider"], row["model"]]
            for kind in ("prompt", "completion", "cached_prompt", "reasoning"):
                tokens.add_metric([*labels, kind], row[f"{kind}_tokens"] or 0)
            cost.add_metric(labels, float(row["cost"] or 0))
            calls.add_metric(labels, row["calls"])
        yield from (tokens, cost, calls)
        for histogram in latency_histograms():
            family = HistogramMetricFamily(histogram.name, histogram.documentation, labels=histogram.labels)
            for labels, counts, count, total in histogram.series:
                buckets = [(format(bound, "g"), found) for bound, found in zip(histogram.bounds, counts, strict=True)]
                family.add_metric(list(labels), [*buckets, ("+Inf", count)], total)
            yield family


REGISTRY.register(DatabaseCollector())
if settings.CHATTER_TRACING:  # spans the collector did not take (core.otel), counted where they were made
    from core.otel import SPANS_DROPPED

    REGISTRY.register(SPANS_DROPPED)


def metrics_text() -> bytes:
    return generate_latest(REGISTRY)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for scrapers (no auth; totals only, nothing per user)."""
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
