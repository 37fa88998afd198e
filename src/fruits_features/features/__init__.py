"""From image bytes to 2048 ResNet50 features: decoding, the engines, the model files, the ONNX export,
and the pandas UDF (the only module here that imports pyspark).
"""
