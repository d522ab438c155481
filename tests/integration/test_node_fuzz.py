"""Property-based fuzzing of every topic the node reads (Hypothesis, bounded for CI).

After every input: the node's workers are alive, a valid capture right after succeeds,
and the capture stored before the fuzzing is byte-for-byte intact. ``PEPI_FUZZ_EXAMPLES``
sets the examples per topic (default 40); ``bench/fuzz_campaign.py`` runs the long campaign.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from support.fuzz import TOPIC_KINDS, FuzzInput, FuzzNode, inputs

from pepi_fleet.broker.runner import EmbeddedBroker

EXAMPLES = int(os.environ.get("PEPI_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def fuzz_node(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzNode]:
    node = FuzzNode(
        broker, f"pepi-t/{uuid.uuid4().hex[:10]}", tmp_path_factory.mktemp("fuzz") / "node"
    )
    yield node
    node.close()


@pytest.mark.parametrize("kind", TOPIC_KINDS)
def test_node_fuzzed_input_never_disables_the_node(fuzz_node: FuzzNode, kind: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(item=inputs(kind))
    def fuzz(item: FuzzInput) -> None:
        fuzz_node.feed(kind, item)
        fuzz_node.check()

    fuzz()
    assert fuzz_node.stats.inputs[kind] >= EXAMPLES
