"""Writes tests/fixtures/data/tf_data_pipelines.json: what tf.data yields for small pipelines (elements
and cardinality), which tests/test_data.py runs through kgraph.data.Dataset. Needs TensorFlow:

    /tmp/tfenv/bin/python tools/make_tf_data_fixture.py
"""

import json
from pathlib import Path

import tensorflow as tf

D = tf.data.Dataset
# the pipelines are Python expressions over D, evaluated with tf.data here and kgraph.data there
PIPELINES = [
    "D.range(10).batch(4)",
    "D.range(10).batch(4, drop_remainder=True)",
    "D.range(10).repeat(2).batch(3)",
    "D.range(10).batch(3).repeat(2)",
    "D.range(10).skip(3).take(4)",
    "D.range(10).take(-1).skip(8)",
    "D.range(10).skip(-1)",
    "D.range(10).repeat().take(13).batch(5)",
    "D.range(5).repeat(0)",
    "D.range(10).skip(12)",
    "D.range(7).map(lambda v: v * 2).batch(2)",
    "D.range(7).filter(lambda v: v % 2 == 0)",
    "D.range(6).batch(4).map(lambda v: v + 1)",
    "D.range(10).take(3).repeat(2)",
    "D.from_tensor_slices(([[1, 2], [3, 4], [5, 6]], [7, 8, 9])).batch(2).map(lambda x, y: x * y[:, None])",
    "D.range(7).batch(2).skip(1)",
    "D.range(7).batch(2).take(2).repeat(2)",
    "D.range(5).batch(2).repeat(2).take(4)",
    "D.range(10).take(7).batch(3, drop_remainder=True)",
    "D.range(6).batch(2).batch(2)",
    "D.range(5).batch(2).cache().skip(1)",
    "D.range(10).shuffle(1, seed=3).batch(4)",
]
CARDINALITIES = [
    "D.range(10).repeat()",
    "D.range(10).repeat().take(5)",
    "D.range(10).repeat().skip(5)",
    "D.range(10).batch(3)",
    "D.range(10).batch(3, drop_remainder=True)",
    "D.range(10).repeat(3)",
    "D.range(10).skip(4)",
    "D.range(10).take(20)",
    "D.range(10).repeat().batch(3)",
    "D.range(10).filter(lambda v: v > 2)",
    "D.range(0).repeat()",
    "D.range(10).shuffle(4).batch(3)",
    "D.range(10).map(lambda v: v).cache()",
    "D.range(10).repeat(0)",
    "D.range(10).batch(3).repeat(2).prefetch(1)",
    "D.range(10).repeat().filter(lambda v: v > 2)",
    "D.range(10).filter(lambda v: v > 2).repeat()",
    "D.range(10).repeat().skip(-1)",
    "D.range(7).batch(2).skip(1)",
    "D.range(7).batch(2).take(2).repeat(3)",
    "D.range(10).shuffle(4).cache()",
    "D.range(10).batch(3).repeat().cache()",
]

out = {
    "tensorflow": tf.__version__,
    "pipelines": {p: [x.tolist() for x in eval(p).as_numpy_iterator()] for p in PIPELINES},
    "cardinality": {c: int(eval(c).cardinality()) for c in CARDINALITIES},
}
path = Path(__file__).parent.parent / "tests" / "fixtures" / "data" / "tf_data_pipelines.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print("wrote", path)
