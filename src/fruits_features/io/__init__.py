"""Input and output: S3 through boto3, listing the input, loading images, writing a run's outputs."""
