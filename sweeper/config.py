"""TrialConfig: one fully resolved trial (scenario + leverages + seed), and the leverage catalogue.

`LEVERAGES` is the one place that says which knobs the engine has, what values they take and
what a trial uses when a space leaves them out. `space.py` validates YAML against it and the
trial reads resolved values from `TrialConfig.leverages`, so a knob is added in one place.
A plug-in leverage's choices are its registry's names (codecs, strategies, models,
summaries), so a plug-in is added in its registry only; tests/test_registries.py checks both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sweeper.engines.registry import ENGINES
from sweeper.fl.codecs import DOWNLINK_CODECS, FRAMINGS, LOSSLESS, UPLINK_CODECS
from sweeper.fl.registry import STRATEGIES
from sweeper.kws import MODELS, SUMMARIES


@dataclass(frozen=True)
class LeverageSpec:
    """What a leverage may be: `choices` for categorical ones, else a numeric kind and bounds."""

    kind: str  # "categorical" | "int" | "float"
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None


LEVERAGES: dict[str, LeverageSpec] = {
    "precision": LeverageSpec(
        "categorical", "fp32", "arithmetic of local training (autocast)",
        choices=("fp32", "bf16", "fp16"),
    ),
    "model": LeverageSpec(
        "categorical", "cnn_small", "keyword-spotting network",
        choices=tuple(MODELS),
    ),
    "width": LeverageSpec("float", 1.0, "multiplier of the model's channel counts", low=0.1,
                          high=4.0),
    "optimizer": LeverageSpec("categorical", "sgd", "client optimizer (SGD has momentum 0.9)",
                              choices=("sgd", "adam")),
    "features": LeverageSpec("categorical", "mfcc", "audio front end",
                             choices=("mfcc", "logmel")),
    "sample_rate": LeverageSpec("categorical", 16_000, "audio rate before features (Hz)",
                                choices=(8_000, 16_000)),
    "n_mels": LeverageSpec("int", 40, "mel bands", low=8, high=128),
    "n_mfcc": LeverageSpec("int", 10, "MFCC coefficients kept (mfcc only)", low=2, high=40),
    "win_ms": LeverageSpec("float", 40.0, "analysis window (ms)", low=10.0, high=100.0),
    "hop_ms": LeverageSpec("float", 20.0, "hop between windows (ms)", low=5.0, high=50.0),
    "update_codec": LeverageSpec(
        "categorical", "none", "encoding of the client's update on the uplink",
        choices=tuple(UPLINK_CODECS),
    ),
    "downlink_codec": LeverageSpec(
        "categorical", "none", "encoding of the global model on the downlink",
        choices=tuple(DOWNLINK_CODECS),
    ),
    "quant_granularity": LeverageSpec(
        "categorical", "tensor", "int8/int4 scales per tensor or per output channel",
        choices=("tensor", "channel"),
    ),
    "stochastic_rounding": LeverageSpec(
        "categorical", False, "int8/int4: unbiased stochastic rounding", choices=(False, True)
    ),
    "topk_ratio": LeverageSpec("float", 0.01, "topk: fraction of entries sent", low=1e-5,
                               high=1.0),
    "lossless": LeverageSpec(
        "categorical", "none", "lossless stage after the codec, both directions",
        choices=tuple(LOSSLESS),
    ),
    "framing": LeverageSpec(
        "categorical", "message", "how a message's encoded arrays travel, both directions: "
        "packed into one Flower Array (message) or one Array each (tensor, Flower's default)",
        choices=tuple(FRAMINGS),
    ),
    "strategy": LeverageSpec(
        "categorical", "fedavg", "server aggregation (flwr.serverapp.strategy)",
        choices=tuple(STRATEGIES),
    ),
    "proximal_mu": LeverageSpec("float", 0.01, "FedProx proximal weight", low=0.0, high=100.0),
    "server_lr": LeverageSpec("float", None, "FedOpt eta / FedAvgM server learning rate "
                              "(default: Flower's)", low=1e-6, high=10.0),
    "server_momentum": LeverageSpec("float", 0.9, "FedAvgM server momentum", low=0.0,
                                    high=0.999),
    "beta_1": LeverageSpec("float", None, "FedAdam/FedYogi first moment decay", low=0.0,
                           high=0.9999),
    "beta_2": LeverageSpec("float", None, "FedAdam/FedYogi second moment decay", low=0.0,
                           high=0.9999),
    "tau": LeverageSpec("float", None, "FedOpt adaptivity (epsilon)", low=1e-9, high=1.0),
    "local_epochs": LeverageSpec("int", 1, "passes over local data per round", low=1, high=50),
    "clients_per_round": LeverageSpec(
        "int_or_fraction", None,
        "clients trained per round: a count (int) or a fraction of all clients (float <= 1)",
        low=0.0, high=10_000,
    ),
    "rounds": LeverageSpec("int", None, "federated rounds (default: scenario.rounds)", low=1,
                           high=10_000),
    "lr": LeverageSpec("float", 0.05, "client SGD learning rate", low=1e-6, high=10.0),
    "data_fraction": LeverageSpec("float", 1.0, "share of its examples a client trains on per "
                                  "round", low=1e-3, high=1.0),
    "summary": LeverageSpec("categorical", "random", "which examples (data_fraction < 1)",
                            choices=tuple(SUMMARIES)),
    "threads_per_client": LeverageSpec("int", None, "torch intra-op threads while a client "
                                       "computes (default: the trial's CPUs)", low=1, high=256),
    "cpu_governor": LeverageSpec("categorical", None, "Linux cpufreq governor of the node",
                                 choices=("performance", "powersave", "userspace",
                                          "ondemand", "schedutil", "conservative")),
    "cpu_freq_khz": LeverageSpec("int", None, "fixed CPU frequency (userspace governor)",
                                 low=100_000, high=10_000_000),
    "gpu_power_limit_w": LeverageSpec("float", None, "GPU power cap through NVML", low=10.0,
                                      high=1000.0),
    "batch_size": LeverageSpec("int", 32, "local mini-batch size", low=1, high=4096),
    "engine": LeverageSpec("categorical", None, "Flower runtime: in-process simulation, or "
                           "SuperLink and SuperNode processes (default: scenario.engine)",
                           choices=tuple(ENGINES)),
}


@dataclass(frozen=True)
class Scenario:
    """The fixed context of every trial of a sweep (not searched)."""

    dataset: str = "synthetic"  # "synthetic" | "speech_commands"
    data_dir: str | None = None  # a Speech Commands folder, for dataset: speech_commands
    task: str = "12"  # "12": 10 keywords + unknown + silence; "35": every word
    corpus_speakers: int = 32  # synthetic corpus: number of distinct voices
    corpus_takes: int = 6  # synthetic corpus: utterances per (speaker, word)
    corpus_seed: int = 0
    num_clients: int = 4
    partition: str = "speaker"  # "speaker" | "iid" | "dirichlet"
    dirichlet_alpha: float = 0.5  # partition: dirichlet; small = skewed labels per client
    rounds: int = 3
    client_eval: bool = True  # clients also evaluate the global model on held-out local data
    engine: str = "simulation"  # "simulation" | "deployment" (SuperLink, SuperNodes)
    # deployment: "loopback", or "netns": each SuperNode in a network namespace, its link
    # shaped from network_profile and its bytes on the wire counted (root only)
    deploy_network: str = "loopback"
    deploy_placement: str = "local"  # deployment: "local", or "ray": a SuperNode per Ray actor
    deploy_tls: bool = False  # deployment: TLS to the SuperLink, certificates made per trial
    deploy_node_auth: bool = False  # deployment: SuperNode authentication (implies TLS)
    host_profile: str = "laptop"
    network_profile: str = "wifi"
    device_profile: str | None = None  # clients' compute as FLOPs x this device's J/FLOP
    meters: str = "auto"  # "auto" | "modeled" | node meters in order, e.g. "zeus,rapl"
    isolation: str = "shared"  # "node": one trial per node, node meters attributed to it
    idle_probe_s: float = 1.0  # node meters: idle power probed this long before the trial
    carbon_region: str = "fr"
    cpus_per_trial: int = 1


@dataclass(frozen=True)
class TrialConfig:
    """One fully resolved trial: every leverage has a value, nothing is left to defaults."""

    scenario: Scenario
    leverages: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": asdict(self.scenario), "leverages": dict(self.leverages),
                "seed": self.seed}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        return cls(Scenario(**data["scenario"]), dict(data["leverages"]), int(data["seed"]))

    @classmethod
    def from_json(cls, text: str) -> TrialConfig:
        return cls.from_dict(json.loads(text))


def resolve_leverages(values: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    """Every known leverage with a value: the given ones, else the catalogue's default."""
    resolved = {name: spec.default for name, spec in LEVERAGES.items()}
    resolved.update({k: v for k, v in values.items() if v is not None})
    resolved["clients_per_round"] = clients_count(resolved["clients_per_round"],
                                                  scenario.num_clients)
    resolved["rounds"] = int(resolved["rounds"] or scenario.rounds)
    resolved["engine"] = resolved["engine"] or scenario.engine
    return resolved


def engine_of(config: TrialConfig) -> str:
    """The trial's Flower runtime: its `engine` leverage, else its scenario's."""
    return str(config.leverages.get("engine") or config.scenario.engine)


def inapplicable(config: TrialConfig) -> set[str]:
    """Names of the settings (leverages, and scenario fields as `scenario.<field>`) that had
    no effect on this trial: a strategy's options under another strategy, a codec's options
    under another codec, `None` (Flower's or the scenario's default), ..."""
    lev, scenario = config.leverages, config.to_dict()["scenario"]
    quantized = {lev.get("update_codec"), lev.get("downlink_codec")} & {"int8", "int4"}
    strategy = lev.get("strategy")
    applies = {
        "proximal_mu": strategy == "fedprox",
        "server_momentum": strategy == "fedavgm",
        "server_lr": strategy in ("fedadam", "fedyogi", "fedadagrad", "fedavgm"),
        "beta_1": strategy in ("fedadam", "fedyogi"),
        "beta_2": strategy in ("fedadam", "fedyogi"),
        "tau": strategy in ("fedadam", "fedyogi", "fedadagrad"),
        "quant_granularity": bool(quantized),
        "stochastic_rounding": bool(quantized),
        "topk_ratio": lev.get("update_codec") == "topk",
        "n_mfcc": lev.get("features") == "mfcc",
        "summary": float(lev.get("data_fraction", 1.0)) < 1.0,
        "cpu_freq_khz": lev.get("cpu_governor") == "userspace",
    }
    out = {name for name, used in applies.items() if name in lev and not used}
    out |= {name for name, value in lev.items() if value is None}
    deployment = engine_of(config) == "deployment"
    scenario_applies = {
        "corpus_speakers": scenario["dataset"] == "synthetic",
        "corpus_takes": scenario["dataset"] == "synthetic",
        "corpus_seed": scenario["dataset"] == "synthetic",
        "dirichlet_alpha": scenario["partition"] == "dirichlet",
        "deploy_network": deployment, "deploy_placement": deployment,
        "deploy_tls": deployment, "deploy_node_auth": deployment,
        "idle_probe_s": scenario["isolation"] == "node",
    }
    out |= {f"scenario.{name}" for name, used in scenario_applies.items() if not used}
    out |= {f"scenario.{name}" for name, value in scenario.items() if value is None}
    return out


def clients_count(value: float | int | None, num_clients: int) -> int:
    """A count stays a count; a float in (0, 1] is a fraction of the clients (at least 1)."""
    if value is None:
        return num_clients
    if isinstance(value, float) and value <= 1.0:
        return max(1, round(value * num_clients))
    return min(int(value), num_clients)
