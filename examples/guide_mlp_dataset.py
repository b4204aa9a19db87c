"""The Keras guide's first program: a Sequential MLP trained on random data from NumPy arrays,
then from tf.data-style Datasets with steps_per_epoch and validation_steps, with kgraph.

Replaces (TensorFlow):
    model = tf.keras.Sequential([layers.Dense(64, activation='relu', input_shape=(32,)),
                                 layers.Dense(64, activation='relu'),
                                 layers.Dense(10, activation='softmax')])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.001), loss='categorical_crossentropy',
                  metrics=['accuracy'])
    dataset = tf.data.Dataset.from_tensor_slices((data, labels)).batch(32).repeat()
    model.fit(dataset, epochs=10, steps_per_epoch=30, validation_data=val_dataset, validation_steps=3)
The model itself is examples/guide_mlp.json (what model.to_json() wrote for it).

    python examples/guide_mlp_dataset.py
"""

import os
from pathlib import Path

import numpy as np

import kgraph

SMALL = os.environ.get("KGRAPH_EXAMPLE_SMALL") == "1"  # the test suite's quick run
EPOCHS = 2 if SMALL else 10

model = kgraph.models.load_model(Path(__file__).with_name("guide_mlp.json"), seed=0)
model.compile(optimizer=kgraph.optimizers.Adam(0.001), loss="categorical_crossentropy", metrics=["accuracy"])

rng = np.random.default_rng(0)
data, labels = rng.random((1000, 32)), np.eye(10)[rng.integers(0, 10, 1000)]  # random one-hot labels
val_data, val_labels = rng.random((100, 32)), np.eye(10)[rng.integers(0, 10, 100)]

# from arrays
model.fit(data, labels, epochs=EPOCHS, batch_size=32, validation_data=(val_data, val_labels), verbose=2)

# from Datasets: an infinite training set needs steps_per_epoch, as in Keras
dataset = kgraph.data.Dataset.from_tensor_slices((data, labels)).shuffle(1000, seed=0).batch(32).repeat()
val_dataset = kgraph.data.Dataset.from_tensor_slices((val_data, val_labels)).batch(32).repeat()
model.fit(dataset, epochs=EPOCHS, steps_per_epoch=30, validation_data=val_dataset, validation_steps=3, verbose=2)

test = kgraph.data.Dataset.from_tensor_slices((data, labels)).batch(32)
loss, accuracy = model.evaluate(test, verbose=0)
print(f"evaluate on {test.cardinality()} batches: loss {loss:.4f}, accuracy {accuracy:.3f}")
result = model.predict(kgraph.data.Dataset.from_tensor_slices(data).batch(32), verbose=0)
print("predict:", result.shape)
