"""The Keras guide's "save and restore": weights only, the configuration only (JSON), and the whole
model (a .keras file Keras's load_model also opens), with kgraph.

Replaces (TensorFlow):
    model.save_weights('my_model.weights.h5');  model.load_weights('my_model.weights.h5')
    json_string = model.to_json();  fresh_model = tf.keras.models.model_from_json(json_string)
    model.save('my_model.keras');  model = tf.keras.models.load_model('my_model.keras')

    python examples/save_and_load.py [output folder]
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import kgraph

SMALL = os.environ.get("KGRAPH_EXAMPLE_SMALL") == "1"
out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="kgraph-save-"))
out.mkdir(parents=True, exist_ok=True)

model = kgraph.models.load_model(Path(__file__).with_name("guide_mlp.json"), seed=0)
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
rng = np.random.default_rng(0)
data, labels = rng.random((1000, 32)), np.eye(10)[rng.integers(0, 10, 1000)]  # random one-hot labels
model.fit(data, labels, batch_size=32, epochs=1 if SMALL else 5, verbose=2)
expected = model.predict(data[:8], verbose=0)

# weights only
model.save_weights(out / "my_model.weights.h5")
other = kgraph.models.load_model(Path(__file__).with_name("guide_mlp.json"), seed=1)
other.load_weights(out / "my_model.weights.h5")
assert np.array_equal(other.predict(data[:8], verbose=0), expected)

# the configuration only: a fresh model with new weights
json_string = model.to_json()
(out / "my_model.json").write_text(json_string)
fresh_model = kgraph.models.model_from_json(json_string)
print("from JSON:", fresh_model.name, fresh_model.count_params(), "parameters (newly initialised)")

# the whole model: configuration, weights and optimizer state
model.save(out / "my_model.keras")
restored = kgraph.models.load_model(out / "my_model.keras")
assert np.array_equal(restored.predict(data[:8], verbose=0), expected)
restored.fit(data, labels, batch_size=32, epochs=1, verbose=0)  # training resumes with Adam's state
print("saved and restored:", sorted(p.name for p in out.iterdir()))
