"""Fruits! feature pipeline: S3 images -> ResNet50 -> StandardScaler + PCA -> labelled CSV on S3."""
