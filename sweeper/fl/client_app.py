"""The ClientApp: local training with the trial's precision, update sent through its codec.

Everything a client needs arrives in the train message (the trial's config travels in the
ConfigRecord), so the same app runs under the simulation engine and under SuperNodes.
"""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from sweeper.config import TrialConfig
from sweeper.fl.codecs import get_codec
from sweeper.fl.task import (
    TRIAL_CONFIG_KEY,
    client_data,
    difference,
    load_arrays,
    model_to_arrays,
    new_model,
)
from sweeper.kws.train import train

app = ClientApp()


@app.train()
def train_round(msg: Message, context: Context) -> Message:
    started = time.process_time()
    config_record = msg.content["config"]
    config = TrialConfig.from_json(str(config_record[TRIAL_CONFIG_KEY]))
    server_round = int(config_record["server-round"])
    partition_id = int(context.node_config["partition-id"])
    lev = config.leverages
    global_arrays: ArrayRecord = msg.content["arrays"]
    model = new_model(config)
    load_arrays(model, global_arrays)
    x, y = client_data(config, partition_id)
    loss = train(model, x, y, epochs=int(lev["local_epochs"]), batch_size=int(lev["batch_size"]),
                 lr=float(lev["lr"]), precision=str(lev["precision"]),
                 seed=config.seed * 1_000_003 + server_round * 1009 + partition_id)
    update = get_codec(str(lev["update_codec"])).encode(
        difference(model_to_arrays(model), global_arrays))
    metrics = MetricRecord({"num-examples": len(y), "train_loss": loss,
                            "cpu_s": time.process_time() - started})
    return Message(RecordDict({"arrays": update, "metrics": metrics}), reply_to=msg)
