"""Shared pytest configuration: Hypothesis profiles.

`ci` (the default) keeps the whole suite fast; `deep` is for nightly or by hand:
`HYPOTHESIS_PROFILE=deep pytest tests/protocol`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
