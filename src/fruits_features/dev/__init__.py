"""Development helpers (the local S3 server, the local spark-submit command line): used by scripts/ and
tests/, never by the jobs.
"""
