"""A trained model: checkpoint file, packaged models, fit check, the Model facade, conversions (widen, ONNX/TorchScript, bioimage.io)."""
