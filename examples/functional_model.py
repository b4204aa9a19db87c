"""The Keras guide's functional-API model (inputs -> Dense -> Dense -> softmax) trained with kgraph.

Replaces (TensorFlow):
    inputs = tf.keras.Input(shape=(32,))
    x = layers.Dense(64, activation='relu')(inputs)
    x = layers.Dense(64, activation='relu')(x)
    predictions = layers.Dense(10, activation='softmax')(x)
    model = tf.keras.Model(inputs=inputs, outputs=predictions)
    model.compile(optimizer=tf.keras.optimizers.RMSprop(0.001), loss='categorical_crossentropy',
                  metrics=['accuracy'])
    model.fit(data, labels, batch_size=32, epochs=5)
The graph is examples/guide_functional.json (model.to_json() of the model above); its input is
named "features", so inputs can also be given by name.

    python examples/functional_model.py
"""

import os
from pathlib import Path

import numpy as np

import kgraph

SMALL = os.environ.get("KGRAPH_EXAMPLE_SMALL") == "1"
EPOCHS = 1 if SMALL else 5

model = kgraph.models.load_model(Path(__file__).with_name("guide_functional.json"), seed=0)
model.compile(optimizer=kgraph.optimizers.RMSprop(0.001), loss="categorical_crossentropy", metrics=["accuracy"])
model.summary()

rng = np.random.default_rng(0)
data, labels = rng.random((1000, 32)), np.eye(10)[rng.integers(0, 10, 1000)]  # random one-hot labels
model.fit(data, labels, batch_size=32, epochs=EPOCHS, verbose=2)

# the same data as a Dataset of named inputs: ({"features": x}, y)
named = kgraph.data.Dataset.from_tensor_slices(({"features": data}, labels)).batch(32)
print("evaluate (named inputs):", model.evaluate(named, verbose=0))
