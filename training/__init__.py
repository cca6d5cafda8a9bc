"""Offline training of the committed example models (Keras 3 → ONNX → `models/`).

`deepserve-train {cnn,rnn,transformer,all}` (see `training.cli`) trains a model on offline data, exports
it with tf2onnx, checks ONNX Runtime against Keras, and writes a model repository entry the server loads.
Nothing here is imported by `service/`; this package imports only `service.config` from the server.
"""
