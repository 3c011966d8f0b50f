"""OpenTelemetry in: the real OpenTelemetry Python SDK and its OTLP/HTTP exporters
against the real swarmfeed binary.

Needs ``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http``; scripts/test
installs them into a virtual environment of their own and runs this directory with it.
"""

from __future__ import annotations

import logging
import tempfile
import unittest
import urllib.request
import warnings

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.server import WAIT, Server

try:  # the name since SDK 1.39; the older one is deprecated
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryLogs
except ImportError:  # pragma: no cover
    from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemoryLogs

RESOURCE = Resource.create({"service.name": "research-crew"})


class OtlpExportTest(unittest.TestCase):
    def setUp(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.server = Server(self._dir.name)
        self.headers = {"Authorization": "Bearer " + self.server.token}

    def tearDown(self) -> None:
        self.server.stop()
        self._dir.cleanup()

    def finished_spans(self):
        """Two GenAI execute_tool spans, one that failed, as an agent framework makes them."""
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=RESOURCE)
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("test.agents")
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.agent.id": "researcher-7",
            "gen_ai.agent.name": "Researcher",
            "swarmfeed.task_id": "task-otel-1",
        }
        with tracer.start_as_current_span("execute_tool web_search", attributes=attributes) as span:
            span.set_attribute("gen_ai.tool.name", "web_search")
        with tracer.start_as_current_span("execute_tool fetch_page", attributes=attributes) as span:
            span.set_attribute("gen_ai.tool.name", "fetch_page")
            span.set_status(Status(StatusCode.ERROR, "404 from the site"))
        provider.shutdown()
        return memory.get_finished_spans()

    def test_an_sdk_tool_span_is_stored_once_and_shows_as_a_tool_call(self) -> None:
        spans = self.finished_spans()
        exporter = OTLPSpanExporter(
            endpoint=self.server.url + "/v1/traces", headers=self.headers, compression=Compression.Gzip, timeout=WAIT
        )
        # The second export is what an exporter's retry sends: the same spans again.
        self.assertEqual(exporter.export(spans), SpanExportResult.SUCCESS)
        self.assertEqual(exporter.export(spans), SpanExportResult.SUCCESS)
        exporter.shutdown()

        events = self.server.events()
        self.assertEqual([e["event_type"] for e in events], ["tool.completed", "tool.failed"])
        done, failed = events
        self.assertEqual(done["source"], "research-crew")
        self.assertEqual(done["agent_id"], "researcher-7")
        self.assertEqual(done["task_id"], "task-otel-1")
        self.assertEqual(done["data"]["tool_name"], "web_search")
        self.assertGreaterEqual(done["data"]["duration_ms"], 0)
        ctx = spans[0].context
        self.assertEqual(done["id"], "otel:{:032x}:{:016x}".format(ctx.trace_id, ctx.span_id))
        self.assertEqual(failed["data"]["error"], "404 from the site")

        request = urllib.request.Request(self.server.url + "/swarm/live", headers=self.headers)
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            page = response.read().decode()
        for expected in ("Tool: web_search", "agent researcher-7", "task task-otel-1", "Tool failed"):
            self.assertIn(expected, page)

    def test_sdk_log_records_become_system_events_once(self) -> None:
        memory = InMemoryLogs()
        provider = LoggerProvider(resource=RESOURCE)
        provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
        logger = logging.getLogger("test.otlp.agent")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        # The SDK's own logging bridge, deprecated in favour of a separate package but
        # still what most applications use; its warning is not this test's business.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            handler = LoggingHandler(logger_provider=provider)
        logger.addHandler(handler)
        try:
            logger.info("plan ready", extra={"swarmfeed.task_id": "task-otel-2"})
            logger.warning("the search API is slow")
            logger.error("the browser crashed")
        finally:
            logger.removeHandler(handler)
            provider.shutdown()
        records = memory.get_finished_logs()
        self.assertEqual(len(records), 3)

        exporter = OTLPLogExporter(endpoint=self.server.url + "/v1/logs", headers=self.headers, timeout=WAIT)
        for _ in range(2):
            result = exporter.export(records)
            self.assertEqual(result.name, "SUCCESS")
        exporter.shutdown()

        events = self.server.events()
        self.assertEqual(
            [(e["event_type"], e["data"]["message"]) for e in events],
            [
                ("system.info", "plan ready"),
                ("system.warning", "the search API is slow"),
                ("system.error", "the browser crashed"),
            ],
        )
        self.assertEqual(events[0]["task_id"], "task-otel-2")
        self.assertTrue(all(e["source"] == "research-crew" for e in events))


if __name__ == "__main__":
    unittest.main()
