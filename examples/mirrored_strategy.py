"""The Keras guide's distribution example: MirroredStrategy, each global batch of a Dataset split
across the replicas (here CPU threads), with kgraph.

Replaces (TensorFlow):
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model = tf.keras.Sequential([...])
        model.compile(loss='categorical_crossentropy', optimizer=tf.keras.optimizers.SGD(0.2))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).repeat()
    model.fit(dataset, epochs=5, steps_per_epoch=10)

    python examples/mirrored_strategy.py
"""

import os
from pathlib import Path

import numpy as np

import kgraph

SMALL = os.environ.get("KGRAPH_EXAMPLE_SMALL") == "1"

strategy = kgraph.distribute.MirroredStrategy(devices=["cpu:0", "cpu:1"])
print("Number of devices:", strategy.num_replicas_in_sync)
with strategy.scope():
    model = kgraph.models.load_model(Path(__file__).with_name("guide_mlp.json"), seed=0)
    model.compile(loss="categorical_crossentropy", optimizer=kgraph.optimizers.SGD(0.2))

rng = np.random.default_rng(0)
x, y = rng.random((1024, 32)), np.eye(10)[rng.integers(0, 10, 1024)]  # random one-hot labels
dataset = kgraph.data.Dataset.from_tensor_slices((x, y)).batch(64).repeat()  # 64: the global batch
model.fit(dataset, epochs=2 if SMALL else 5, steps_per_epoch=10, verbose=2)
print("evaluate:", model.evaluate(kgraph.data.Dataset.from_tensor_slices((x, y)).batch(64), verbose=0))
