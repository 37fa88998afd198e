"""The run's HTML report: gathering its bounded inputs (Spark, S3), drawing the figures, writing the
page.
"""
