"""``make bench``: stepwise side by side with the usual ways of streaming a recurrent model.

``python -m bench.run`` measures, in one run on one machine: Keras and TensorFlow
baselines, the bare TFLite floor, the stepwise engine per variant and interpreter
backend, the daemon end to end through a pseudo-terminal, the device process cost,
the flash cost of checkpoints, and how the step scales with lanes and model size.
Modules that the device environment runs (``device_probe``, ``tflite_rows``,
``timing``) import only numpy and ``runtime``.
"""
