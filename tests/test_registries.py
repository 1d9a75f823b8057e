"""Every plug-in kind has one registry, and the leverage catalogue and the space's checks
offer exactly its names: adding a codec, strategy, model, summary, engine, sampler or node
meter to one side only fails here."""

from __future__ import annotations

import pytest

from sweeper import samplers, space
from sweeper.config import LEVERAGES
from sweeper.energy import NODE_METERS
from sweeper.engines import ENGINES
from sweeper.errors import SpaceError
from sweeper.fl.codecs import DOWNLINK_CODECS, FRAMINGS, LOSSLESS, UPLINK_CODECS
from sweeper.fl.registry import STRATEGIES
from sweeper.kws import MODELS, SUMMARIES
from sweeper.plugins import load

CATALOGUED = {  # leverage -> its registry
    "update_codec": UPLINK_CODECS,
    "downlink_codec": DOWNLINK_CODECS,
    "lossless": LOSSLESS,
    "framing": FRAMINGS,
    "strategy": STRATEGIES,
    "model": MODELS,
    "summary": SUMMARIES,
    "engine": ENGINES,
}


@pytest.mark.parametrize("leverage", sorted(CATALOGUED))
def test_catalogue_choices_are_the_registry_names(leverage: str) -> None:
    assert list(LEVERAGES[leverage].choices) == list(CATALOGUED[leverage])
    assert LEVERAGES[leverage].default in (*CATALOGUED[leverage], None)


@pytest.mark.parametrize("registry", [UPLINK_CODECS, LOSSLESS, FRAMINGS, STRATEGIES, MODELS,
                                      SUMMARIES, ENGINES],
                         ids=["codecs", "lossless", "framings", "strategies", "models",
                              "summaries", "engines"])
def test_every_registered_reference_imports(registry: dict[str, str]) -> None:
    """A "module:attr" entry with a typo would only fail when a trial picks it."""
    for name, ref in registry.items():
        assert callable(load(ref)), name


def test_codecs_say_what_they_can_do() -> None:
    for name, ref in UPLINK_CODECS.items():
        codec = load(ref)
        assert isinstance(codec.error_feedback, bool) and isinstance(codec.lossless, bool)
        if name in DOWNLINK_CODECS:  # the server keeps no residual to feed back
            assert not codec.error_feedback, name
    assert all(load(ref).lossless for ref in (*LOSSLESS.values(), *FRAMINGS.values()))


def test_space_accepts_exactly_the_registered_samplers_and_node_meters() -> None:
    assert set(space.SCENARIO_CHOICES["engine"]) == set(ENGINES)
    for name in samplers.SAMPLERS:
        assert type(samplers.SAMPLERS[name](_Space(), 0)).__module__.startswith(
            ("optuna", "sweeper")), name
    for meters in (*NODE_METERS, ",".join(NODE_METERS)):
        assert space._scenario("t", {"meters": meters}).meters == meters
    with pytest.raises(SpaceError, match="is not auto, modeled"):
        space._scenario("t", {"meters": "nvml"})


class _Space:
    population_size = 4
