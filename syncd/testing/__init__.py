"""Test kit for syncd and its connectors: a workbench that runs real syncs against a
destination with an injected clock (nothing sleeps), and the connector conformance suite.

Connector test modules use it like this::

    from syncd.testing import Workbench
    from syncd.testing.conformance import DestinationConformance, Harness

    class TestMyPlatform(DestinationConformance):
        @pytest.fixture
        def harness(self, ...) -> Harness: ...
"""

from __future__ import annotations

from syncd.testing.workbench import FakeClock, Workbench

__all__ = ["FakeClock", "Workbench"]
